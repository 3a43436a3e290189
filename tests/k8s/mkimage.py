#!/usr/bin/env python3
"""Write a single-layer container image as a `docker save`-format tar, without any registry
or container engine. The result is what `kind load docker-image` hands to the node, and it
loads with `ctr -n k8s.io images import OUT.tar` (or `docker load -i OUT.tar`).

Build:
  mkimage.py OUT.tar REF [--file SRC:DEST[:MODE]] [--link DEST:TARGET] [--dir DEST[:MODE]]
             [--cap DEST:CAP[,CAP...]] [--user UID[:GID]] [--entrypoint JSON] [--cmd JSON]
             [--env K=V] [--workdir DIR] [--label K=V] [--expose PORT/PROTO] [--static]

  --file      a regular file copied from SRC (symlinks followed); MODE is octal, default 0755
              if SRC is executable, else 0644
  --link      a symbolic link DEST -> TARGET (TARGET taken literally, may be relative)
  --dir       a directory (default mode 0755; e.g. tmp:1777); parents of every path are
              added as 0755 directories automatically
  --cap       file capabilities of DEST, permitted + effective, like `setcap CAP=+ep DEST`
              (e.g. cap_net_bind_service: lets a non-root process bind ports < 1024)
  --user      numeric only (no /etc/passwd lookups in the runtime): UID or UID:GID
  --static    refuse any --file that is a dynamically linked ELF executable

Verify (what a loader reads: manifest.json, config digest, diff_ids, the layer tars):
  mkimage.py --verify TAR [REF]   # exits non-zero with a message if anything is off

Reproducible: every entry has mtime 0, uid/gid 0 and no user/group names; entries are
sorted by path; the config's `created` is the epoch. The same inputs give the same bytes
(and so the same image ID). The output is written to OUT.tar.tmp and renamed.
"""
import argparse
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile

MTIME = 0
EPOCH = "1970-01-01T00:00:00Z"

# linux/capability.h
CAPS = [
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
]


def die(msg):
    sys.exit(f"mkimage.py: {msg}")


def arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "riscv64": "riscv64",
            "ppc64le": "ppc64le", "s390x": "s390x"}.get(m, m)


def clean(path):
    """Image paths are relative, normalized, and stay inside the root."""
    p = os.path.normpath("/" + path).lstrip("/")
    if not p or p == "." or p.startswith(".."):
        die(f"bad image path {path!r}")
    return p


def vfs_cap(names):
    """security.capability xattr value (VFS_CAP_REVISION_2, effective bit set)."""
    lo = hi = 0
    for n in names.split(","):
        n = n.strip().lower()
        n = n[4:] if n.startswith("cap_") else n
        if n not in CAPS:
            die(f"unknown capability {n!r}")
        bit = CAPS.index(n)
        if bit < 32:
            lo |= 1 << bit
        else:
            hi |= 1 << (bit - 32)
    magic = 0x02000000 | 0x1  # VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    return (magic.to_bytes(4, "little") + lo.to_bytes(4, "little") + (0).to_bytes(4, "little")
            + hi.to_bytes(4, "little") + (0).to_bytes(4, "little"))


def elf_interp(path):
    """The PT_INTERP of an ELF file (a dynamic executable), or None (static, or not ELF)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return None
        is64, le = head[4] == 2, head[5] == 1
        bo = "little" if le else "big"
        if is64:
            phoff, phentsize, phnum = (int.from_bytes(head[32:40], bo),
                                       int.from_bytes(head[54:56], bo), int.from_bytes(head[56:58], bo))
        else:
            phoff, phentsize, phnum = (int.from_bytes(head[28:32], bo),
                                       int.from_bytes(head[42:44], bo), int.from_bytes(head[44:46], bo))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ph = f.read(phentsize)
            if int.from_bytes(ph[0:4], bo) == 3:  # PT_INTERP
                if is64:
                    off, size = int.from_bytes(ph[8:16], bo), int.from_bytes(ph[32:40], bo)
                else:
                    off, size = int.from_bytes(ph[4:8], bo), int.from_bytes(ph[16:20], bo)
                f.seek(off)
                return f.read(size).rstrip(b"\0").decode(errors="replace")
    return None


def info(name, **kw):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def sha256_file(f):
    h = hashlib.sha256()
    f.seek(0)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    f.seek(0)
    return h.hexdigest()


def build(a):
    entries = {}  # path -> (kind, data)

    def put(path, kind, data, explicit=True):
        old = entries.get(path)
        if old is not None:
            if old[0] == "dir" and kind == "dir":
                if explicit:
                    entries[path] = (kind, data)
                return
            die(f"{path} given twice")
        entries[path] = (kind, data)

    def parents(path):
        parts = path.split("/")[:-1]
        for i in range(len(parts)):
            d = "/".join(parts[: i + 1])
            if d not in entries:
                put(d, "dir", 0o755, explicit=False)
            elif entries[d][0] != "dir":
                die(f"{d} is not a directory (needed for {path})")

    for spec in a.dir:
        dest, _, mode = spec.partition(":")
        p = clean(dest)
        parents(p)
        put(p, "dir", int(mode, 8) if mode else 0o755)
    for spec in a.file:
        src, sep, rest = spec.partition(":")
        if not sep:
            die(f"--file {spec}: expected SRC:DEST[:MODE]")
        dest, _, mode = rest.partition(":")
        if not os.path.isfile(src):
            die(f"--file {spec}: {src} is not a regular file")
        if a.static:
            interp = elf_interp(src)
            if interp:
                die(f"{src} is dynamically linked (interpreter {interp}); --static wants static binaries")
        if mode:
            m = int(mode, 8)
        else:
            m = 0o755 if os.stat(src).st_mode & stat.S_IXUSR else 0o644
        p = clean(dest)
        parents(p)
        put(p, "file", (os.path.realpath(src), m))
    for spec in a.link:
        dest, sep, target = spec.partition(":")
        if not sep or not target:
            die(f"--link {spec}: expected DEST:TARGET")
        p = clean(dest)
        parents(p)
        put(p, "link", target)
    xattrs = {}
    for spec in a.cap:
        dest, sep, caps = spec.partition(":")
        p = clean(dest)
        if not sep or p not in entries or entries[p][0] != "file":
            die(f"--cap {spec}: DEST must be a --file of the image")
        xattrs[p] = vfs_cap(caps)

    tmp_out = a.out + ".tmp"
    layer_f = open(tmp_out + ".layer", "w+b")
    try:
        with tarfile.open(fileobj=layer_f, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(entries):
                kind, data = entries[path]
                if kind == "dir":
                    t.addfile(info(path + "/", type=tarfile.DIRTYPE, mode=data))
                elif kind == "link":
                    t.addfile(info(path, type=tarfile.SYMTYPE, linkname=data, mode=0o777))
                else:
                    src, mode = data
                    ti = info(path, size=os.path.getsize(src), mode=mode)
                    if path in xattrs:
                        # Go's archive/tar (containerd) and GNU tar read this PAX record.
                        ti.pax_headers = {"SCHILY.xattr.security.capability":
                                          xattrs[path].decode("utf-8", "surrogateescape")}
                    with open(src, "rb") as f:
                        t.addfile(ti, f)
        layer_f.flush()
        layer_hex = sha256_file(layer_f)
        layer_size = os.path.getsize(layer_f.name)
        cfg = {}
        if a.user:
            if not all(x.isdigit() for x in a.user.split(":")) or a.user.count(":") > 1:
                die(f"--user {a.user}: numeric UID or UID:GID only")
            cfg["User"] = a.user
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        for e in a.env:
            if "=" not in e:
                die(f"--env {e}: expected K=V")
            k = e.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != k] + [e]
        cfg["Env"] = env
        for key, val in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd)):
            if val is not None:
                v = json.loads(val)
                if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                    die(f"--{key.lower()} must be a JSON list of strings")
                cfg[key] = v
        cfg["WorkingDir"] = a.workdir
        if a.label:
            cfg["Labels"] = dict(x.split("=", 1) for x in a.label)
        if a.expose:
            cfg["ExposedPorts"] = {p if "/" in p else p + "/tcp": {} for p in a.expose}
        config = {
            "architecture": arch(), "os": "linux", "created": EPOCH,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_hex]},
            "history": [{"created": EPOCH, "created_by": "tests/k8s/mkimage.py"}],
        }
        cfg_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        cfg_hex = hashlib.sha256(cfg_bytes).hexdigest()
        manifest = [{"Config": cfg_hex + ".json", "RepoTags": [a.ref],
                     "Layers": [layer_hex + "/layer.tar"]}]
        # The legacy `repositories` file of `docker save` (name -> tag -> top layer).
        name, _, tag = a.ref.rpartition(":")
        repositories = {name: {tag: layer_hex}} if name and "/" not in tag else None
        with tarfile.open(tmp_out, "w", format=tarfile.USTAR_FORMAT) as out:
            out.addfile(info(layer_hex + "/", type=tarfile.DIRTYPE, mode=0o755))
            layer_f.seek(0)
            out.addfile(info(layer_hex + "/layer.tar", size=layer_size, mode=0o644), layer_f)
            files = [(cfg_hex + ".json", cfg_bytes), ("manifest.json", json.dumps(manifest).encode())]
            if repositories:
                files.append(("repositories", json.dumps(repositories).encode()))
            for name, data in files:
                out.addfile(info(name, size=len(data), mode=0o644), io.BytesIO(data))
        os.replace(tmp_out, a.out)
    finally:
        layer_f.close()
        os.unlink(layer_f.name)
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)
    print(f"{a.ref} {a.out} id=sha256:{cfg_hex} layer=sha256:{layer_hex} "
          f"entries={len(entries)} size={os.path.getsize(a.out)}")


def verify(path, want_ref=None):
    def fail(msg):
        die(f"--verify {path}: {msg}")
    try:
        t = tarfile.open(path)
    except (OSError, tarfile.TarError) as e:
        fail(f"not a tar: {e}")
    with t:
        names = {m.name.rstrip("/"): m for m in t.getmembers()}

        def read(name):
            m = names.get(name)
            if m is None or not m.isfile():
                fail(f"missing {name}")
            return t.extractfile(m).read()
        try:
            manifest = json.loads(read("manifest.json"))
        except ValueError as e:
            fail(f"manifest.json is not JSON: {e}")
        if not isinstance(manifest, list) or not manifest:
            fail("manifest.json is not a non-empty list")
        for img in manifest:
            cfg_name = img.get("Config", "")
            cfg_bytes = read(cfg_name)
            if hashlib.sha256(cfg_bytes).hexdigest() != cfg_name.removesuffix(".json"):
                fail(f"config {cfg_name}: digest does not match its name")
            try:
                config = json.loads(cfg_bytes)
            except ValueError as e:
                fail(f"config {cfg_name} is not JSON: {e}")
            diff_ids = config.get("rootfs", {}).get("diff_ids", [])
            layers = img.get("Layers", [])
            if len(diff_ids) != len(layers) or not layers:
                fail(f"{len(layers)} layers but {len(diff_ids)} diff_ids")
            nfiles = 0
            for lname, did in zip(layers, diff_ids):
                data = read(lname)
                if "sha256:" + hashlib.sha256(data).hexdigest() != did:
                    fail(f"layer {lname}: sha256 is not the diff_id {did}")
                try:
                    with tarfile.open(fileobj=io.BytesIO(data)) as lt:
                        nfiles += len(lt.getmembers())
                except tarfile.TarError as e:
                    fail(f"layer {lname} is not a tar: {e}")
            tags = img.get("RepoTags") or []
            if want_ref and want_ref not in tags:
                fail(f"RepoTags {tags} lack {want_ref}")
            c = config.get("config", {})
            print(f"ok {path}: {' '.join(tags)} id=sha256:{cfg_name.removesuffix('.json')} "
                  f"{config.get('os')}/{config.get('architecture')} layers={len(layers)} "
                  f"entries={nfiles} user={c.get('User', '')!r} entrypoint={c.get('Entrypoint')} "
                  f"cmd={c.get('Cmd')}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--verify":
        if len(sys.argv) not in (3, 4):
            die("usage: mkimage.py --verify TAR [REF]")
        verify(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("ref")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--cap", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--cmd", default=None)
    p.add_argument("--workdir", default="/")
    p.add_argument("--static", action="store_true")
    build(p.parse_args())


if __name__ == "__main__":
    main()
