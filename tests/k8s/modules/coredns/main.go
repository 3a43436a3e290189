// Command coredns is CoreDNS v1.14.x with a trimmed plugin set, built the way CoreDNS
// documents builds with a custom plugin list: set dnsserver.Directives, import the
// plugins for their init side effects, call coremain.Run(). Leaving out the cloud
// backends (route53, azure, clouddns), etcd, dnstap, geoip, forward, grpc, tls, ...
// makes it much lighter to build than the full binary (core/plugin imports all of them).
//
// There is deliberately no forward plugin: the test cluster is offline, so a name outside
// the cluster zones must fail locally (NXDOMAIN/SERVFAIL) instead of leaving the machine.
//
// Built by tests/k8s/build-control-plane.sh; regenerate go.mod/go.sum with
// tests/k8s/gen-wrapper-modules.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, for their init() registration.
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics" // the "prometheus" directive
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives: the plugins above, in the order of upstream's core/dnsserver/zdirectives.go
// (the order in which they handle a query; it matters, see plugin.cfg).
var directives = []string{
	"reload",
	"bind",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"any",
	"loadbalance",
	"cache",
	"rewrite",
	"template",
	"hosts",
	"kubernetes",
	"loop",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
