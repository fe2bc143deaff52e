// Package deploytest holds no code, only tests that keep the deployment
// files honest without Docker or Kubernetes: docker-compose.yml is loaded
// with compose-go (the loader behind "docker compose config"), and it,
// deploy/nginx.conf, deploy/Dockerfile and deploy/k8s are checked for what
// the gateway and the other files rely on (replicas, healthchecks, probes,
// headers, grace periods longer than the drain, variable names the gateway
// knows).
package deploytest
