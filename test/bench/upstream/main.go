// Command upstream is the origin the router's benchmark puts behind it: GET
// answers a fixed 128-byte body, POST reads and discards its body first;
// over HTTPS with -tls. Standard library only, but for the benchmarks'
// certificate; loopback only.
package main

import (
	"crypto/tls"
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"

	"github.com/splitapp/router/test/bench/selfsigned"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18180", "listen address")
	size := flag.Int("size", 128, "body size in bytes")
	useTLS := flag.Bool("tls", false, "serve HTTPS, with a self-signed RSA-2048 certificate made at start (as *.herokuapp.com's key size)")
	flag.Parse()
	body := make([]byte, *size)
	for i := range body {
		body[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[i%36]
	}
	length := strconv.Itoa(len(body))
	srv := &http.Server{Addr: *addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", length)
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}
	if !*useTLS {
		log.Fatal(srv.ListenAndServe())
	}
	cert, err := selfsigned.Certificate()
	if err != nil {
		log.Fatal(err)
	}
	// HTTP/1.1 only, as the router and the proxies it is compared with
	// speak to apps.
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
