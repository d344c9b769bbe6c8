// go-client: the lab's Go client. net/http GETs URL, trusting only the certificates in CA
// (PEM), pinned to one TLS version, through an HTTP CONNECT proxy when one is given. It exits
// 0 once the response's head arrived, 1 on any error (said on stderr).
//
//	go-client URL CA 1.2|1.3 [PROXY_HOST:PORT]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: go-client URL CA 1.2|1.3 [PROXY_HOST:PORT]")
		os.Exit(2)
	}
	pem, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail(fmt.Errorf("no certificate in %s", os.Args[2]))
	}
	version := uint16(tls.VersionTLS12)
	if os.Args[3] == "1.3" {
		version = tls.VersionTLS13
	}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: version, MaxVersion: version},
	}
	if len(os.Args) > 4 {
		proxy, err := url.Parse("http://" + os.Args[4])
		if err != nil {
			fail(err)
		}
		transport.Proxy = http.ProxyURL(proxy)
	}
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fail(err)
	}
	resp.Body.Close()
}
