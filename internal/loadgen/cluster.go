package loadgen

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/cluster"
)

// ClusterOptions says what gateways to start for a benchmark.
type ClusterOptions struct {
	// Gateways is how many to start. Zero means 2.
	Gateways int
	// Binary is the parley binary; empty means build ./cmd/parley.
	Binary string
	// Env is added to the gateways' environment after BenchEnv.
	Env map[string]string
	// Dir keeps the logs; empty means a temporary directory.
	Dir string
	// Logf is told what the cluster does; nil means nothing is said.
	Logf func(format string, args ...any)
}

// BenchEnv is the gateway environment benchmarks run with: the per-connection
// send rate limit lifted (publishers send far more than 10 messages a
// second), the per-address connection cap lifted (every client comes from
// 127.0.0.1), and a short history lifetime so that nothing a run leaves in
// Redis outlives it for long even if the cleanup is skipped. Everything else
// is the gateways' defaults, the send queue bound included.
func BenchEnv() map[string]string {
	return map[string]string{
		"PARLEY_SEND_RATE":        "1000000",
		"PARLEY_SEND_BURST":       "1000000",
		"PARLEY_MAX_CONNS_PER_IP": "1000000",
		"PARLEY_HISTORY_MAX_AGE":  "1h",
	}
}

// Cluster is a set of gateways on this machine's RabbitMQ and Redis,
// started for one benchmark run in a namespace (exchange and key prefix) of
// its own, behind nginx, which the benchmark bypasses.
type Cluster struct {
	c        *cluster.Cluster
	redisURL string
}

// StartCluster starts the gateways and waits until each is ready.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if opts.Gateways == 0 {
		opts.Gateways = 2
	}
	env := BenchEnv()
	maps.Copy(env, opts.Env)
	c, err := cluster.Start(ctx, cluster.Options{
		Gateways: opts.Gateways,
		Binary:   opts.Binary,
		Env:      env,
		Dir:      opts.Dir,
		Logf:     opts.Logf,
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	return &Cluster{c: c, redisURL: cluster.DefaultRedisURL}, nil
}

// URLs returns the gateways' own base URLs.
func (c *Cluster) URLs() []string {
	out := make([]string, c.c.Len())
	for i := range out {
		out[i] = c.c.GatewayURL(i)
	}
	return out
}

// PIDs returns the gateways' process ids.
func (c *Cluster) PIDs() []int {
	out := make([]int, c.c.Len())
	for i := range out {
		out[i] = c.c.GatewayPID(i)
	}
	return out
}

// Close stops the gateways and nginx, deletes the cluster's exchange (the
// cluster package does) and the Redis keys under its prefix.
func (c *Cluster) Close() error {
	err := c.c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(err, deleteKeys(ctx, c.redisURL, c.c.RedisPrefix()))
}

// deleteKeys deletes every key under prefix, which must be one the
// benchmark's cluster made.
func deleteKeys(ctx context.Context, redisURL, prefix string) error {
	if len(prefix) < len("parley:cluster-") {
		return fmt.Errorf("loadgen: refusing to delete keys under the short prefix %q", prefix)
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("loadgen: redis url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer func() { _ = rdb.Close() }()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("loadgen: scan %s*: %w", prefix, err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rdb.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("loadgen: unlink %s*: %w", prefix, err)
		}
		keys = keys[n:]
	}
	return nil
}
