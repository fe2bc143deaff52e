module github.com/parleychat/parley

go 1.26.0

require (
	github.com/caarlos0/env/v11 v11.4.2 // indirect
	github.com/coder/websocket v1.8.15 // indirect
)
