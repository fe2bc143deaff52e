package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/auth"
)

const tokenTestSecret = "a-test-secret-of-at-least-32-bytes!!"

// mintCLI runs "parley token args..." with env and returns stdout, stderr
// and the error.
func mintCLI(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runToken(args, func(k string) string { return env[k] }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestRunToken(t *testing.T) {
	env := map[string]string{"PARLEY_JWT_SECRET": tokenTestSecret}
	start := time.Now().Truncate(time.Second)
	out, _, err := mintCLI(t, env, "--user", "alice", "--name", "Alice", "--ttl", "2h", "--rooms", "team-*, general")
	if err != nil {
		t.Fatalf("parley token: %v", err)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("stdout = %q; want the token on one line", out)
	}
	j, err := auth.NewJWT(auth.JWTConfig{Secret: tokenTestSecret})
	if err != nil {
		t.Fatal(err)
	}
	id, err := j.Verify(context.Background(), strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("the gateway refuses the printed token: %v", err)
	}
	if id.User.ID != "u_alice" || id.User.Name != "Alice" || id.Guest {
		t.Errorf("user = %+v", id)
	}
	if !slices.Equal(id.Rooms, []string{"team-*", "general"}) || !id.MayJoin("team-a") || id.MayJoin("random") {
		t.Errorf("rooms = %q", id.Rooms)
	}
	if d := id.Expires.Sub(start); d < 2*time.Hour || d > 2*time.Hour+2*time.Second {
		t.Errorf("expires %v from now; want 2h", d)
	}

	// Defaults: an hour, every room, the name is the user id.
	out, _, err = mintCLI(t, env, "--user", "bob")
	if err != nil {
		t.Fatal(err)
	}
	id, err = j.Verify(context.Background(), strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if id.User.Name != "bob" || id.Rooms != nil || id.Expires.Sub(start) > time.Hour+2*time.Second {
		t.Errorf("defaults: %+v", id)
	}

	// --rooms '' is a token for no room, not for every room.
	out, _, err = mintCLI(t, env, "--user", "bob", "--rooms", "")
	if err != nil {
		t.Fatal(err)
	}
	if id, err = j.Verify(context.Background(), strings.TrimSpace(out)); err != nil || id.Rooms == nil || id.MayJoin("general") {
		t.Errorf("--rooms '': %+v, %v", id, err)
	}
}

func TestRunTokenAudienceIssuer(t *testing.T) {
	strict, err := auth.NewJWT(auth.JWTConfig{Secret: tokenTestSecret, Audience: "parley", Issuer: "https://backend.example"})
	if err != nil {
		t.Fatal(err)
	}
	// From the gateway's own configuration...
	env := map[string]string{
		"PARLEY_JWT_SECRET": tokenTestSecret, "PARLEY_JWT_AUDIENCE": "parley", "PARLEY_JWT_ISSUER": "https://backend.example",
	}
	out, _, err := mintCLI(t, env, "--user", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verify(context.Background(), strings.TrimSpace(out)); err != nil {
		t.Errorf("token minted with the gateway's aud/iss: %v", err)
	}
	// ...or from flags, which win.
	out, _, err = mintCLI(t, env, "--user", "alice", "--aud", "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verify(context.Background(), strings.TrimSpace(out)); err == nil {
		t.Error("a token for audience \"other\" passed a gateway for \"parley\"")
	}
	out, _, err = mintCLI(t, map[string]string{"PARLEY_JWT_SECRET": tokenTestSecret}, "--user", "alice", "--aud", "parley", "--iss", "https://backend.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verify(context.Background(), strings.TrimSpace(out)); err != nil {
		t.Errorf("token with --aud and --iss: %v", err)
	}
}

func TestRunTokenErrors(t *testing.T) {
	env := map[string]string{"PARLEY_JWT_SECRET": tokenTestSecret}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error
	}{
		{"no secret", nil, []string{"--user", "alice"}, "PARLEY_JWT_SECRET"},
		{"short secret", map[string]string{"PARLEY_JWT_SECRET": "short"}, []string{"--user", "alice"}, "at least 32"},
		{"no user", env, nil, "--user"},
		{"empty user", env, []string{"--user", ""}, "--user"},
		{"bad user", env, []string{"--user", "alice smith"}, "sub"},
		{"bad ttl", env, []string{"--user", "alice", "--ttl", "soon"}, "ttl"},
		{"zero ttl", env, []string{"--user", "alice", "--ttl", "0s"}, "--ttl must be positive"},
		{"negative ttl", env, []string{"--user", "alice", "--ttl", "-1h"}, "--ttl must be positive"},
		{"bad rooms", env, []string{"--user", "alice", "--rooms", "team-["}, "rooms"},
		{"unknown flag", env, []string{"--user", "alice", "--admin"}, "admin"},
		{"stray argument", env, []string{"--user", "alice", "extra"}, "extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := mintCLI(t, tc.env, tc.args...)
			if err == nil {
				t.Fatalf("no error; printed %q", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v; want it to mention %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("printed %q on failure", out)
			}
			if s := env["PARLEY_JWT_SECRET"]; strings.Contains(err.Error(), s) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}

	out, errOut, err := mintCLI(t, env, "-h")
	if err != nil || out != "" || !strings.Contains(errOut, "--user") {
		t.Errorf("-h: err %v, stdout %q, stderr %q", err, out, errOut)
	}
}
