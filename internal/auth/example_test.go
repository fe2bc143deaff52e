package auth_test

import (
	"context"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/auth"
)

// A backend in Go cannot import this internal package; it signs the same
// claims with golang-jwt (or any JWT library) and the gateway takes them.
// This is the example README.md shows.
func ExampleJWT_Verify_backendToken() {
	secret := []byte("the value of PARLEY_JWT_SECRET, 32+ bytes")

	// In the backend, after it signed the user in:
	claims := jwt.MapClaims{
		"sub":   "alice",                          // the user's id in the backend
		"name":  "Alice",                          // display name
		"rooms": []string{"team-*", "general"},    // optional; absent: every room
		"exp":   time.Now().Add(time.Hour).Unix(), // required
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		panic(err)
	}

	// In the gateway:
	j, err := auth.NewJWT(auth.JWTConfig{Secret: string(secret)})
	if err != nil {
		panic(err)
	}
	id, err := j.Verify(context.Background(), token)
	if err != nil {
		panic(err)
	}
	fmt.Println(id.User.ID, id.User.Name, id.MayJoin("team-red"), id.MayJoin("random"))
	// Output: u_alice Alice true false
}

func ExampleMint() {
	secret := []byte("the value of PARLEY_JWT_SECRET, 32+ bytes")
	token, err := auth.Mint(secret, auth.Claims{Subject: "bot-7", Name: "Build bot", Rooms: []string{"ci"}}, 10*time.Minute)
	if err != nil {
		panic(err)
	}
	j, _ := auth.NewJWT(auth.JWTConfig{Secret: string(secret)})
	id, err := j.Verify(context.Background(), token)
	fmt.Println(id.User.ID, id.User.Name, id.Rooms, err)
	// Output: u_bot-7 Build bot [ci] <nil>
}
