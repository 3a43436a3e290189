//! Test hosts in network namespaces the test creates itself.
//!
//! Layout for `n` nodes (run as root; needs `ip` from iproute2):
//!
//! ```text
//!  root ns ── veth h ── [switch ns: bridge] ── veth ── node ns k (10.213.S.k/24)
//! ```
//!
//! The harness reaches every node through its own veth (10.213.S.254). A partition is a pair
//! of blackhole routes (one in each side's namespace), so it cuts exactly the links chosen,
//! in both directions, while the harness still talks to everyone. Everything is removed on
//! drop. Traffic never leaves the namespaces this module created.

use std::process::Command;

use anyhow::{bail, Context};

pub struct TestNet {
    tag: String,
    subnet: u8,
    n: usize,
    blackholes: Vec<(usize, usize)>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl TestNet {
    /// Whether this process may create namespaces.
    pub fn available() -> bool {
        let probe = format!("ggprobe{}", std::process::id());
        let ok = ip(&["netns", "add", &probe]).is_ok();
        let _ = ip(&["netns", "del", &probe]);
        ok
    }

    pub fn create(n: usize) -> anyhow::Result<TestNet> {
        let pid = std::process::id();
        let tag = format!("gg{}", pid % 100_000);
        let subnet = (pid % 200) as u8 + 20;
        let mut net = TestNet {
            tag,
            subnet,
            n,
            blackholes: Vec::new(),
        };
        net.setup().inspect_err(|_| net.teardown())?;
        Ok(net)
    }

    pub fn ns(&self, k: usize) -> String {
        format!("{}n{k}", self.tag)
    }
    fn switch(&self) -> String {
        format!("{}sw", self.tag)
    }
    /// Address of node `k` (1-based).
    pub fn ip_of(&self, k: usize) -> String {
        format!("10.213.{}.{k}", self.subnet)
    }

    fn setup(&mut self) -> anyhow::Result<()> {
        let sw = self.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for k in 1..=self.n {
            let ns = self.ns(k);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (a, b) = (format!("{}v{k}", self.tag), format!("{}s{k}", self.tag));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            ip(&["link", "set", &a, "netns", &ns])?;
            ip(&["link", "set", &b, "netns", &sw])?;
            ip(&["-n", &ns, "link", "set", &a, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip_of(k)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &sw, "link", "set", &b, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &b, "up"])?;
        }
        let (h, s) = (format!("{}h", self.tag), format!("{}s0", self.tag));
        ip(&["link", "add", &h, "type", "veth", "peer", "name", &s])?;
        ip(&["link", "set", &s, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &s, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &s, "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.213.{}.254/24", self.subnet),
            "dev",
            &h,
        ])?;
        ip(&["link", "set", &h, "up"])?;
        Ok(())
    }

    /// Command prefix that runs a program inside node `k`'s namespace.
    pub fn exec_prefix(&self, k: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(k)]
    }

    /// Cuts the link between nodes `a` and `b` (both directions).
    pub fn cut(&mut self, a: usize, b: usize) -> anyhow::Result<()> {
        if a == b || self.blackholes.contains(&(a, b)) {
            return Ok(());
        }
        ip(&[
            "-n",
            &self.ns(a),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.ip_of(b)),
        ])?;
        ip(&[
            "-n",
            &self.ns(b),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.ip_of(a)),
        ])?;
        self.blackholes.push((a, b));
        self.blackholes.push((b, a));
        Ok(())
    }

    /// Splits the nodes into `side` and the rest.
    pub fn partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        for a in side {
            for b in 1..=self.n {
                if !side.contains(&b) {
                    self.cut(*a, b)?;
                }
            }
        }
        Ok(())
    }

    pub fn heal(&mut self) -> anyhow::Result<()> {
        for (a, b) in std::mem::take(&mut self.blackholes) {
            let _ = ip(&[
                "-n",
                &self.ns(a),
                "route",
                "del",
                "blackhole",
                &format!("{}/32", self.ip_of(b)),
            ]);
        }
        Ok(())
    }

    pub fn is_partitioned(&self) -> bool {
        !self.blackholes.is_empty()
    }

    fn teardown(&mut self) {
        for k in 1..=self.n {
            let _ = ip(&["netns", "del", &self.ns(k)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        let _ = ip(&["link", "del", &format!("{}h", self.tag)]);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.teardown();
    }
}
