package cluster

import (
	"bytes"
	_ "embed" // for nginxTemplate
	"errors"
	"fmt"
	"text/template"
)

// nginxTemplate is the only source of Parley's nginx configuration; see the
// comment at its top.
//
//go:embed nginx.conf.tmpl
var nginxTemplate string

// NginxConfig holds what differs between the nginx in front of the compose
// replicas and the one Start runs on this machine. Everything else (headers,
// timeouts, retries) is fixed in the template, so that what is tested locally
// is what is deployed.
type NginxConfig struct {
	// Origin is written at the top of the file as comment lines, to tell a
	// reader where the file came from and how to change it.
	Origin []string
	// User is the user worker processes run as. Empty leaves the directive
	// out: nginx then uses its built-in user when started as root, and the
	// current user otherwise.
	User string
	// WorkerProcesses is a number or "auto".
	WorkerProcesses string
	// PIDFile is where the master writes its process id.
	PIDFile string
	// TempDir holds nginx's temporary files (request bodies, buffered
	// responses); it must be writable by the workers.
	TempDir string
	// Resolver is the DNS server nginx keeps re-resolving upstream names
	// with, which needs nginx 1.27.3 or later. Empty means the upstreams are
	// resolved once, at start (right for IP addresses).
	Resolver string
	// Listen is the argument of the listen directive: "8080" or
	// "127.0.0.1:40123".
	Listen string
	// Upstreams are the gateways, host:port each.
	Upstreams []string
}

// ComposeNginxConfig is the configuration of the nginx service in
// docker-compose.yml; deploy/nginx.conf is its rendering. The nginx image
// runs the master as root and the workers as "nginx", and keeps its
// temporary files under /var/cache/nginx. One upstream name stands for every
// replica of the gateway service: Docker's DNS answers it with the address of
// each (running) replica, and nginx re-resolves it.
func ComposeNginxConfig() NginxConfig {
	return NginxConfig{
		Origin: []string{
			"Generated from internal/cluster/nginx.conf.tmpl for docker-compose.yml: edit the",
			"template, then regenerate this file with",
			"  PARLEY_UPDATE_NGINX_CONF=1 go test ./internal/cluster -run TestDeployNginxConf",
		},
		User:            "nginx",
		WorkerProcesses: "auto",
		PIDFile:         "/var/run/nginx.pid",
		TempDir:         "/var/cache/nginx",
		Resolver:        "127.0.0.11",
		Listen:          "8080",
		Upstreams:       []string{"gateway:8080"},
	}
}

// RenderNginx renders the nginx configuration for cfg.
func RenderNginx(cfg NginxConfig) ([]byte, error) {
	var errs []error
	if len(cfg.Upstreams) == 0 {
		errs = append(errs, errors.New("no upstreams"))
	}
	for name, v := range map[string]string{
		"WorkerProcesses": cfg.WorkerProcesses, "PIDFile": cfg.PIDFile,
		"TempDir": cfg.TempDir, "Listen": cfg.Listen,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is empty", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("render nginx config: %w", err)
	}
	t, err := template.New("nginx.conf").Option("missingkey=error").Parse(nginxTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse nginx template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, cfg); err != nil {
		return nil, fmt.Errorf("render nginx config: %w", err)
	}
	return b.Bytes(), nil
}
