#!/usr/bin/env python3
"""Writes an OCI layout tarball of one image with N gzip layers of about SIZE MiB (uncompressed) each.

The data is pseudo-random text (compresses about 3:1, like real binaries and libraries), generated
from a fixed seed so every run imports the same bytes.
usage: gen_image.py OUT.tar [LAYERS=5] [MIB_PER_LAYER=40]
"""
import gzip, hashlib, io, json, random, sys, tarfile

out = sys.argv[1]
layers = int(sys.argv[2]) if len(sys.argv) > 2 else 5
mib = int(sys.argv[3]) if len(sys.argv) > 3 else 40
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4096)]


def blob(data, media_type):
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}, data


def layer(i):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        per_file = 4 << 20
        for f in range(mib * (1 << 20) // per_file):
            chunks, n = [], 0
            while n < per_file:
                line = b" ".join(rng.choices(words, k=16)) + b"\n"
                chunks.append(line)
                n += len(line)
            data = b"".join(chunks)[:per_file]
            info = tarfile.TarInfo(f"layer{i}/file{f:03d}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    return hashlib.sha256(tar).hexdigest(), gzip.compress(tar, compresslevel=1, mtime=0)


descs, blobs, diff_ids = [], {}, []
for i in range(layers):
    diff, gz = layer(i)
    diff_ids.append("sha256:" + diff)
    d, data = blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip")
    descs.append(d)
    blobs[d["digest"]] = data
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cdesc, cdata = blob(config, "application/vnd.oci.image.config.v1+json")
blobs[cdesc["digest"]] = cdata
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": cdesc, "layers": descs}).encode()
mdesc, mdata = blob(manifest, "application/vnd.oci.image.manifest.v1+json")
blobs[mdesc["digest"]] = mdata
mdesc["annotations"] = {"org.opencontainers.image.ref.name": "example.com/bench/big:1"}
index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()

with tarfile.open(out, "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        t.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    for digest, data in blobs.items():
        add("blobs/sha256/" + digest[7:], data)
print(out)
