#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (an OCI image layout in a tar) without a Docker engine.

The archive loads with `ctr images import` (containerd names the image from the index's
`io.containerd.image.name` annotation), `docker load` (Docker 25 and later), `skopeo copy
oci-archive:...` and `podman load`. The output is reproducible: every timestamp is
SOURCE_DATE_EPOCH (default 0), entries are sorted, owners are numeric.

    oci_image.py --name localhost/gpushare-test:latest --out target/images/test.tar \\
        --file /usr/bin/busybox=/bin/busybox,mode=0755 --link /bin/sh=busybox \\
        --dir /tmp,mode=1777 --env PATH=/bin --cmd sh

Entries: --file SRC=DEST, --dir DEST, --link DEST=TARGET (a symlink), --text DEST=CONTENT; each may
end with ,mode=OCTAL and ,owner=UID:GID. Parent directories are added as root-owned 0755.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def parse_entry(spec):
    """'A=B,mode=0755,owner=1:1' -> ('A', 'B', {'mode': ..., 'owner': ...})."""
    head, *opts = spec.split(",")
    options = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "mode":
            options["mode"] = int(value, 8)
        elif key == "owner":
            uid, _, gid = value.partition(":")
            options["owner"] = (int(uid), int(gid or uid))
        else:
            sys.exit(f"oci_image: unknown option {key!r} in {spec!r}")
    left, _, right = head.partition("=")
    return left, right, options


def clean(path):
    path = os.path.normpath("/" + path).lstrip("/")
    if not path or path == ".":
        sys.exit("oci_image: an entry may not be the root directory")
    return path


class Layer:
    def __init__(self):
        self.entries = {}  # path in the image -> (TarInfo, bytes or None)

    def _info(self, path, kind, options, default_mode):
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mtime = EPOCH
        info.mode = options.get("mode", default_mode)
        info.uid, info.gid = options.get("owner", (0, 0))
        info.uname = info.gname = ""
        return info

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = (self._info(parent, tarfile.DIRTYPE, {}, 0o755), None)

    def add_dir(self, dest, options):
        path = clean(dest)
        self._parents(path)
        self.entries[path] = (self._info(path, tarfile.DIRTYPE, options, 0o755), None)

    def add_bytes(self, dest, data, options, default_mode=0o644):
        path = clean(dest)
        self._parents(path)
        info = self._info(path, tarfile.REGTYPE, options, default_mode)
        info.size = len(data)
        self.entries[path] = (info, data)

    def add_file(self, src, dest, options):
        with open(src, "rb") as f:
            data = f.read()
        mode = os.stat(src).st_mode & 0o7777
        self.add_bytes(dest, data, options, default_mode=mode)

    def add_link(self, dest, target, options):
        path = clean(dest)
        self._parents(path)
        info = self._info(path, tarfile.SYMTYPE, options, 0o777)
        info.linkname = target
        self.entries[path] = (info, None)

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(archive, data):
    d = digest(data)
    info = tarfile.TarInfo("blobs/sha256/" + d.split(":", 1)[1])
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    archive.addfile(info, io.BytesIO(data))
    return {"digest": d, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="image reference, e.g. localhost/gpushare:0.1.0")
    p.add_argument("--out", required=True, help="the archive to write")
    p.add_argument("--file", action="append", default=[], metavar="SRC=DEST[,mode=..][,owner=..]")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[,mode=..][,owner=..]")
    p.add_argument("--link", action="append", default=[], metavar="DEST=TARGET")
    p.add_argument("--text", action="append", default=[], metavar="DEST=CONTENT[,mode=..]")
    p.add_argument("--user", help="UID[:GID] the container runs as")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--port", action="append", default=[], metavar="8443/tcp")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", default="/")
    args = p.parse_args()

    layer = Layer()
    for spec in args.dir:
        dest, _, options = parse_entry(spec)
        layer.add_dir(dest, options)
    for spec in args.file:
        src, dest, options = parse_entry(spec)
        layer.add_file(src, dest, options)
    for spec in args.link:
        dest, target, options = parse_entry(spec)
        layer.add_link(dest, target, options)
    for spec in args.text:
        # The content may hold commas; options are not taken from --text.
        dest, _, content = spec.partition("=")
        layer.add_bytes(dest, content.encode(), {})

    tar = layer.tar()
    layer_gz = io.BytesIO()
    with gzip.GzipFile(fileobj=layer_gz, mode="wb", mtime=EPOCH) as gz:
        gz.write(tar)
    layer_gz = layer_gz.getvalue()

    created = datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "Env": args.env,
        "WorkingDir": args.workdir,
    }
    if args.user:
        config["User"] = args.user
    if args.entrypoint:
        config["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["Cmd"] = args.cmd
    if args.port:
        config["ExposedPorts"] = {port: {} for port in args.port}
    if args.label:
        config["Labels"] = dict(label.split("=", 1) for label in args.label)
    image_config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        "history": [{"created": created, "created_by": "tests/tools/image/oci_image.py"}],
    }

    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as archive:
        config_desc = blob(archive, canonical(image_config))
        layer_desc = blob(archive, layer_gz)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
        }
        manifest_desc = blob(archive, canonical(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }
        for name, data in (("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", canonical(index))):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            archive.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.name} {manifest_desc['digest']}")


if __name__ == "__main__":
    main()
