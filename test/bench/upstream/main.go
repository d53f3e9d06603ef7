// Command upstream is the origin the router's benchmark puts behind it: GET
// answers a fixed 128-byte body, POST reads and discards its body first;
// over HTTPS with -tls. Standard library only, loopback only.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"
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
	cert, err := selfSigned()
	if err != nil {
		log.Fatal(err)
	}
	// HTTP/1.1 only, as the router and the proxies it is compared with
	// speak to apps.
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func selfSigned() (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
