package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	getenv := func(string) string { return "" }
	for _, args := range [][]string{
		{"-gateways", "0"},
		{"-port", "70000"},
		{"-nonsense"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"parley-cluster"}, args...), getenv, &stdout, &stderr)
		if err == nil {
			t.Errorf("run %v succeeded", args)
		}
		if stdout.Len() > 0 {
			t.Errorf("run %v printed %q", args, stdout.String())
		}
	}
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"parley-cluster", "-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(stderr.String(), "-gateways") {
		t.Errorf("-h does not describe -gateways:\n%s", stderr.String())
	}
}
