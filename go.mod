module github.com/splitapp/router

go 1.26.8

require (
	github.com/caarlos0/env/v10 v10.0.0 // indirect
	github.com/go-chi/chi/v5 v5.5.0 // indirect
	github.com/gorilla/securecookie v1.1.2 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
)
