// Command bareproxy is fasthttp's server in front of a fasthttp HostClient
// and nothing else: no headers added, no log, no metrics, no health. The
// router's benchmark runs it beside the router, so the cost of what the
// router does on top of the same data plane is measured, not guessed.
// Loopback only.
package main

import (
	"crypto/tls"
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("addr", "127.0.0.1:18184", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18180", "upstream host:port")
	useTLS := flag.Bool("tls", false, "the upstream speaks HTTPS (its certificate is not verified)")
	flag.Parse()
	app := &fasthttp.HostClient{Addr: *upstream, MaxConns: 4096, IsTLS: *useTLS,
		TLSConfig: &tls.Config{InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(8)}}
	proxy := func(ctx *fasthttp.RequestCtx) {
		if *useTLS {
			// HostClient refuses a request whose scheme is not its own.
			ctx.Request.URI().SetScheme("https")
		}
		if err := app.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	}
	log.Fatal((&fasthttp.Server{Handler: proxy, NoDefaultServerHeader: true}).ListenAndServe(*listen))
}
