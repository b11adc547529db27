// bench_worker.py's Go variant: net/http/fcgi serving the demo app's answer
// on the pool socket it inherits as fd 0, as supervisord's fcgi-program
// hands it over.  Built by bench_worker.py when `go` is installed.
package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
	"strconv"
)

func main() {
	listener, err := net.FileListener(os.NewFile(0, "pool socket"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd 0 is not a listening socket:", err)
		os.Exit(3)
	}
	pid := os.Getpid()
	err = fcgi.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := fmt.Sprintf("ProcessId: %d\n", pid)
		// as fcgi-worker sends it (and nginx then need not chunk it)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		fmt.Fprint(w, body)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
