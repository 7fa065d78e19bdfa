package sandbox

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
)

// maxJWTBytes bounds the tokens the sandbox parses.
const maxJWTBytes = 8 << 10

var errMalformedJWT = errors.New("malformed jwt")

// jwt is a parsed, not yet verified, compact JWS.
type jwt struct {
	header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	claims struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	signingInput string
	signature    []byte
}

// parseJWT decodes a compact JWS (header.claims.signature, base64url without padding).
func parseJWT(s string) (*jwt, error) {
	if len(s) > maxJWTBytes {
		return nil, errMalformedJWT
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errMalformedJWT
	}
	enc := base64.RawURLEncoding
	var t jwt
	h, err := enc.DecodeString(parts[0])
	if err != nil || json.Unmarshal(h, &t.header) != nil {
		return nil, errMalformedJWT
	}
	c, err := enc.DecodeString(parts[1])
	if err != nil || json.Unmarshal(c, &t.claims) != nil {
		return nil, errMalformedJWT
	}
	if t.signature, err = enc.DecodeString(parts[2]); err != nil {
		return nil, errMalformedJWT
	}
	t.signingInput = parts[0] + "." + parts[1]
	return &t, nil
}

// verifyRS256 checks an RSASSA-PKCS1-v1_5 SHA-256 signature, as Google's OAuth2 JWT-bearer
// assertions carry.
func (t *jwt) verifyRS256(pub *rsa.PublicKey) error {
	if t.header.Alg != "RS256" {
		return errors.New("jwt alg is not RS256")
	}
	sum := sha256.Sum256([]byte(t.signingInput))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], t.signature)
}

// verifyES256 checks an ECDSA P-256 SHA-256 signature in the JWS form (r||s, 32 bytes each),
// as APNs provider tokens carry.
func (t *jwt) verifyES256(pub *ecdsa.PublicKey) error {
	if t.header.Alg != "ES256" {
		return errors.New("jwt alg is not ES256")
	}
	if len(t.signature) != 64 {
		return errors.New("jwt ES256 signature is not 64 bytes")
	}
	r := new(big.Int).SetBytes(t.signature[:32])
	s := new(big.Int).SetBytes(t.signature[32:])
	sum := sha256.Sum256([]byte(t.signingInput))
	if !ecdsa.Verify(pub, sum[:], r, s) {
		return errors.New("jwt signature does not verify")
	}
	return nil
}
