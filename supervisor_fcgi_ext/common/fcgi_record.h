/* FastCGI's record header, for the C files that frame records
 * (common/_fastcgi.c, worker/fastpath_send.c): common/fastcgi.py's HEADER. */
#ifndef FCGI_RECORD_H
#define FCGI_RECORD_H

#define FCGI_VERSION 1
#define FCGI_BEGIN_REQUEST 1
#define FCGI_END_REQUEST 3
#define FCGI_PARAMS 4
#define FCGI_STDIN 5
#define FCGI_STDOUT 6
/* a record's content is at most 65535 bytes; a multiple of 8 needs no padding */
#define FCGI_MAX_CONTENT 65528

static inline void fcgi_put_header(unsigned char *at, int kind, unsigned rid,
                                   Py_ssize_t length, int padding)
{
    at[0] = FCGI_VERSION;
    at[1] = (unsigned char)kind;
    at[2] = (unsigned char)(rid >> 8);
    at[3] = (unsigned char)rid;
    at[4] = (unsigned char)(length >> 8);
    at[5] = (unsigned char)length;
    at[6] = (unsigned char)padding;
    at[7] = 0;
}

#endif
