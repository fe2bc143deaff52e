package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP is the address a request came from. Behind a proxy, RemoteAddr is
// the proxy's; X-Forwarded-For then names the client, but anyone can send
// that header, so it is read only when the request came from a trusted proxy,
// and right to left, stopping at the first address that is not itself a
// trusted proxy (the one the first trusted proxy saw).
func (g *Gateway) clientIP(r *http.Request) netip.Addr {
	remote := parseHostAddr(r.RemoteAddr)
	if !g.trusted(remote) {
		return remote
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	ip := remote
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: trust nothing further left
		}
		ip = hop.Unmap()
		if !g.trusted(ip) {
			break
		}
	}
	return ip
}

func (g *Gateway) trusted(ip netip.Addr) bool {
	for _, p := range g.opts.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func parseHostAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// admit reserves a connection slot for the user from ip, or reports which
// cap is full. The caps are per gateway: behind a load balancer, a client's
// connections spread over gateways, so the effective cap is higher, but one
// client can still not exhaust any one gateway.
func (g *Gateway) admit(ip netip.Addr, user string) (ok bool, why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.draining.Load():
		return false, "gateway is shutting down; reconnect"
	case g.perIP[ip] >= g.opts.MaxConnsPerIP:
		return false, "too many connections from your address"
	case g.perUser[user] >= g.opts.MaxConnsPerUser:
		return false, "too many connections for this user"
	}
	g.perIP[ip]++
	g.perUser[user]++
	return true, ""
}

func (g *Gateway) release(ip netip.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
	if g.perUser[user]--; g.perUser[user] <= 0 {
		delete(g.perUser, user)
	}
}
