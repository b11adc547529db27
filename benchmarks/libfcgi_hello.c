/* The FastCGI ceiling for bench_worker.py: a C responder on libfcgi
 * (Debian: libfcgi-dev) serving the demo app's answer from fd 0, the pool's
 * shared socket, as fcgi-worker does.
 *
 *     cc -O2 -o libfcgi_hello libfcgi_hello.c -lfcgi
 */
#include <fcgiapp.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    FCGX_Request request;
    char body[64];
    int length = snprintf(body, sizeof body, "ProcessId: %d\n", (int)getpid());

    if (FCGX_Init() != 0 || FCGX_InitRequest(&request, 0, 0) != 0)
        return 1;
    while (FCGX_Accept_r(&request) >= 0) {
        FCGX_FPrintF(request.out, "Status: 200 OK\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\n\r\n%s", length, body);
        FCGX_Finish_r(&request);
    }
    return 0;
}
