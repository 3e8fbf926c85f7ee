// Command etcd runs a single-member etcd for the Driftwarden test environment.
//
// It wraps go.etcd.io/etcd/server/v3/embed so etcd is built from the Go module
// proxy. Flags: -data-dir, -listen-client (host:port), -listen-peer (host:port).
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "etcd-data", "directory for etcd's data")
	client := flag.String("listen-client", "127.0.0.1:2379", "client address host:port")
	peer := flag.String("listen-peer", "127.0.0.1:2380", "peer address host:port")
	flag.Parse()

	clientURL := url.URL{Scheme: "http", Host: *client}
	peerURL := url.URL{Scheme: "http", Host: *peer}

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.LogLevel = "warn"

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("etcd: start: %v", err)
	}
	defer server.Close()

	select {
	case <-server.Server.ReadyNotify():
		log.Printf("etcd: ready on %s", clientURL.String())
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		log.Fatal("etcd: not ready after 60s")
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-server.Err():
		log.Fatalf("etcd: %v", err)
	case <-stop:
	}
}
