package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// certValidity is how long the generated CA and server certificate are valid.
const certValidity = 30 * 24 * time.Hour

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newCA() (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sandbox: ca key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "Nudge push sandbox CA", Organization: []string{"Nudge"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sandbox: ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sandbox: ca certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{
		cert: cert,
		key:  key,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pool: pool,
	}, nil
}

// issueServerCert returns the TLS config of the APNs listener: a certificate for 127.0.0.1,
// ::1 and localhost signed by the CA.
func (c *ca) issueServerCert() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sandbox: server key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"Nudge push sandbox"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("sandbox: server certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key}},
	}, nil
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

// newCredentials generates a service account for project whose token_uri is tokenURI, and an
// APNs signing key.
func newCredentials(project, tokenURI string) (credentials, error) {
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return credentials{}, fmt.Errorf("sandbox: service-account key: %w", err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return credentials{}, fmt.Errorf("sandbox: service-account key: %w", err)
	}
	c := credentials{
		saKey:        saKey,
		saKeyID:      hex.EncodeToString(randomBytes(20)),
		saEmail:      "nudge-push@" + project + ".iam.gserviceaccount.com",
		apnsKeyID:    randomID(10),
		accessTokens: make(map[string]time.Time),
	}
	c.saJSON, err = json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              c.saKeyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER})),
		"client_email":                c.saEmail,
		"client_id":                   "100000000000000000001",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "",
		"universe_domain":             "googleapis.com",
	}, "", "  ")
	if err != nil {
		return credentials{}, fmt.Errorf("sandbox: service account: %w", err)
	}

	c.apnsKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return credentials{}, fmt.Errorf("sandbox: apns key: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(c.apnsKey)
	if err != nil {
		return credentials{}, fmt.Errorf("sandbox: apns key: %w", err)
	}
	c.apnsP8 = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	return c, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails, see crypto/rand.Read
	return b
}

// randomID returns n random characters of [0-9A-Z], the alphabet of Apple key and team ids.
func randomID(n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := randomBytes(n)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// NewDeviceToken returns a random device token in the platform's format: 64 hex digits for
// APNs, an FCM registration token ("<instance id>:APA91b<...>") otherwise.
func NewDeviceToken(platform string) string {
	if platform == PlatformAPNs {
		return hex.EncodeToString(randomBytes(32))
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(randomBytes(16)) + ":APA91b" + strings.TrimRight(enc.EncodeToString(randomBytes(100)), "=")
}
