// Command upstream is the origin the router's benchmark puts behind it: GET
// answers a fixed 128-byte body, POST reads and discards its body first.
// Standard library only, loopback only.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18180", "listen address")
	size := flag.Int("size", 128, "body size in bytes")
	flag.Parse()
	body := make([]byte, *size)
	for i := range body {
		body[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[i%36]
	}
	length := strconv.Itoa(len(body))
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", length)
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})))
}
