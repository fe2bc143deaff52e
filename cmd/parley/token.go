package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parleychat/parley/internal/auth"
)

// runToken implements "parley token": it prints a token signed with the
// gateway's PARLEY_JWT_SECRET, for trying a deployment out and for backend
// developers who want to see what their own code must produce. Audience and
// issuer default to PARLEY_JWT_AUDIENCE and PARLEY_JWT_ISSUER, so that a
// token minted next to a gateway's configuration is one that gateway takes.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("parley token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user id (the token's sub); required")
	name := fs.String("name", "", "display name (default: the user id)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	aud := fs.String("aud", getenv("PARLEY_JWT_AUDIENCE"), "audience (aud)")
	iss := fs.String("iss", getenv("PARLEY_JWT_ISSUER"), "issuer (iss)")
	var rooms []string
	fs.Func("rooms", "comma-separated room patterns the user may join, e.g. 'team-*,general' (default: every room; '' for none)",
		func(s string) error {
			rooms = []string{}
			for p := range strings.SplitSeq(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					rooms = append(rooms, p)
				}
			}
			return nil
		})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley token --user ID [--name NAME] [--ttl 1h] [--rooms 'team-*,general'] [--aud X] [--iss Y]")
		fmt.Fprintln(stderr, "Prints a token signed with PARLEY_JWT_SECRET (HS256).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("token: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected arguments %q", fs.Args())
	}
	secret := getenv("PARLEY_JWT_SECRET")
	if secret == "" {
		return errors.New("token: PARLEY_JWT_SECRET is not set; set it to the gateway's HS256 secret")
	}
	if *user == "" {
		return errors.New("token: --user is required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("token: --ttl must be positive, not %s", *ttl)
	}
	tok, err := auth.Mint([]byte(secret), auth.Claims{
		Subject: *user, Name: *name, Rooms: rooms, Audience: *aud, Issuer: *iss,
	}, *ttl)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
