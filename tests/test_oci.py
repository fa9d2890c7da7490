"""Container images as layers: ``oci:DIR[:REF]`` and ``docker-archive:FILE``.

umoci (an OCI tool nobody here wrote) builds a two-layer image whose second
layer deletes files with whiteouts, and unpacks it: the packed FFS image, as
dissect.ffs reads it, must be umoci's root filesystem.  A ``docker save``
style archive is put together from GNU tar layers with plain and opaque
whiteouts, and compared with the tree worked out here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from conftest import IS_ROOT, gc_disabled, run_rumpfs
from ffs_testlib import dissect_records
from treecompare import assert_same, scan_host

needs_root = pytest.mark.skipif(not IS_ROOT, reason="umoci unpacks with owners as root")


def umoci(*args, cwd):
    subprocess.run(["umoci", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def layout(tmp_path):
    umoci("init", "--layout", "img", cwd=tmp_path)
    umoci("new", "--image", "img:base", cwd=tmp_path)
    umoci("unpack", "--image", "img:base", "b1", cwd=tmp_path)
    root = tmp_path / "b1" / "rootfs"
    (root / "etc").mkdir()
    (root / "etc" / "a").write_text("a\n")
    (root / "etc" / "la").symlink_to("a")
    (root / "gone").mkdir()
    (root / "gone" / "g").write_bytes(b"g" * 70000)
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "b").write_text("b\n")
    (root / "opt" / "app" / "b").chmod(0o750)
    umoci("repack", "--image", "img:v1", "b1", cwd=tmp_path)
    umoci("unpack", "--image", "img:v1", "b2", cwd=tmp_path)
    root = tmp_path / "b2" / "rootfs"
    (root / "etc" / "a").unlink()
    for p in (root / "gone" / "g", root / "opt" / "app" / "b"):
        p.unlink()
    (root / "gone").rmdir()
    (root / "opt" / "app" / "c").write_text("c\n")
    umoci("repack", "--image", "img:v2", "b2", cwd=tmp_path)
    umoci("unpack", "--image", "img:v2", "check", cwd=tmp_path)
    return tmp_path / "img"


@needs_root
def test_oci_layout_with_whiteouts_is_umocis_rootfs(layout, tmp_path):
    out = tmp_path / "r.img"
    run_rumpfs("pack", "--no-stubetc", f"oci:{layout}:v2", "-o", out, "--endian", "little")
    expected = scan_host(tmp_path / "check" / "rootfs")
    assert b"etc/la" in expected and b"gone" not in expected
    # Directory times: umoci's unpack leaves /opt at the time it touched it;
    # rumpfs keeps layer 1's /opt header (layer 2 only implies /opt).
    assert_same(no_dir_times(expected), no_dir_times(dissect_records(out)))


def no_dir_times(records):
    return {p: dict(r, mtime=None) if r["type"] == "dir" else r for p, r in records.items()}


@needs_root
def test_oci_ref_is_required_and_blobs_are_checked(layout, tmp_path):
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", f"oci:{layout}", "-o", out, check=False)
    assert (res.returncode, res.err) == (
        1, f"rumpfs: error: oci:{layout}: 3 manifests: name one as oci:DIR:REF (base, v1, v2)\n")
    res = run_rumpfs("pack", "--no-stubetc", f"oci:{layout}:v9", "-o", out, check=False)
    assert res.err == (f"rumpfs: error: oci:{layout}:v9: no manifest named 'v9' "
                       f"(the layout has: base, v1, v2)\n")
    # Flip a byte of v2's top layer blob.
    index = json.loads((layout / "index.json").read_text())
    v2 = [m for m in index["manifests"]
          if m["annotations"]["org.opencontainers.image.ref.name"] == "v2"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / v2["digest"][7:]).read_text())
    top = layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"][7:]
    blob = bytearray(top.read_bytes())
    blob[-5] ^= 0xFF
    top.write_bytes(blob)
    res = run_rumpfs("pack", "--no-stubetc", f"oci:{layout}:v2", "-o", out, check=False)
    assert (res.returncode, res.err) == (
        1, f"rumpfs: error: oci:{layout}:v2: layer 1: sha256 is {hashlib.sha256(blob).hexdigest()}, "
           f"the image says {top.name}\n")
    assert not out.exists()


def test_verbose_json_and_api_show_the_image_config(tmp_path):
    """umoci writes the config; -v, --json and PackResult.images show what it was told."""
    user, entrypoint, cmd = "app:staff", ["/bin/app", "--serve"], ["--port", "8080"]
    env, workdir = ["FOO=bar baz", "PATH=/usr/local/bin:/usr/bin"], "/srv/app"
    umoci("init", "--layout", "img", cwd=tmp_path)
    umoci("new", "--image", "img:base", cwd=tmp_path)
    umoci("config", "--image", "img:base", "--tag", "app", f"--config.user={user}",
          *(f"--config.entrypoint={w}" for w in entrypoint), *(f"--config.cmd={w}" for w in cmd),
          *(f"--config.env={e}" for e in env), f"--config.workingdir={workdir}", cwd=tmp_path)
    source = f"oci:{tmp_path / 'img'}:app"
    out = tmp_path / "r.cpio"
    lines = run_rumpfs("pack", "--no-stubetc", source, "-o", out, "-v").out.splitlines()
    assert lines[1:] == [f"{source}: user: {user}",
                         f"{source}: entrypoint: {json.dumps(entrypoint)}",
                         f"{source}: cmd: {json.dumps(cmd)}",
                         f"{source}: working directory: {workdir}",
                         *(f"{source}: env: {e}" for e in env)]
    report = json.loads(run_rumpfs("pack", "--no-stubetc", source, "-o", out, "--json").out)
    expected = {"source": source, "user": user, "entrypoint": entrypoint, "cmd": cmd, "env": env,
                "working_dir": workdir}
    assert report["images"] == [expected]
    from rumpfs.api import pack
    result = pack([source], str(out), stubetc=False, progress=False)
    (image,) = result.images
    assert (image.user, image.entrypoint, image.cmd, image.env, image.working_dir) == (
        user, entrypoint, cmd, env, workdir)
    # A plain directory has no image config.
    assert run_rumpfs("pack", "--no-stubetc", tmp_path / "img", "-o", out, "-v").out.count("\n") == 1


def tar_dir(src, archive):
    subprocess.run(["tar", "-C", str(src), "--format=gnu", "--numeric-owner", "-cf", str(archive),
                    "."], check=True)
    return archive


def test_docker_archive_with_opaque_directory(tmp_path):
    l1, l2, save = tmp_path / "l1", tmp_path / "l2", tmp_path / "save"
    for d in (l1 / "etc", l1 / "gone", l1 / "keep", l2 / "etc", l2 / "keep", save / "aaa", save / "bbb"):
        d.mkdir(parents=True)
    (l1 / "etc" / "a").write_text("a\n")
    (l1 / "etc" / "b").write_text("b\n")
    (l1 / "gone" / "g").write_text("g\n")
    (l1 / "keep" / "old").write_text("old\n")
    (l2 / "etc" / ".wh.a").write_text("")
    (l2 / ".wh.gone").write_text("")
    (l2 / "keep" / ".wh..wh..opq").write_text("")
    (l2 / "keep" / "new").write_text("new\n")
    layers = [tar_dir(l1, save / "aaa" / "layer.tar"), tar_dir(l2, save / "bbb" / "layer.tar")]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"User": "nobody", "Entrypoint": ["/bin/app"]},
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in layers]}})
    config_name = hashlib.sha256(config.encode()).hexdigest() + ".json"
    (save / config_name).write_text(config)
    (save / "manifest.json").write_text(json.dumps([{
        "Config": config_name, "RepoTags": ["app:1"], "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]))
    archive = tar_dir(save, tmp_path / "app.tar")
    out = tmp_path / "r.cpio"
    lines = run_rumpfs("pack", "--no-stubetc", f"docker-archive:{archive}:/srv", "-o", out,
                       "-v").out.splitlines()
    assert lines[1:] == [f"docker-archive:{archive}: user: nobody",
                         f"docker-archive:{archive}: entrypoint: [\"/bin/app\"]"]
    names = subprocess.run(["cpio", "-it", "--quiet"], stdin=open(out, "rb"), capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == [".", "srv", "srv/etc", "srv/etc/b", "srv/keep", "srv/keep/new"]

    # A layer that is not what the config's diff_ids say is refused.
    (l2 / "keep" / "new").write_text("tampered\n")
    tar_dir(l2, save / "bbb" / "layer.tar")
    tar_dir(save, archive)
    res = run_rumpfs("pack", "--no-stubetc", f"docker-archive:{archive}", "-o", out, check=False)
    tampered = hashlib.sha256((save / "bbb" / "layer.tar").read_bytes()).hexdigest()
    assert res.returncode == 1
    assert res.err == (f"rumpfs: error: docker-archive:{archive}: layer 1 "
                       f"(bbb/layer.tar): sha256 is {tampered}, the image says "
                       f"{json.loads(config)['rootfs']['diff_ids'][1][7:]}\n")
    assert os.path.exists(out)  # the earlier output, unchanged


@needs_root
def test_multi_platform_index_picks_the_target(layout, tmp_path):
    """An image index (written here, over umoci's manifests): v1 for amd64, v2 for arm64."""
    index = json.loads((layout / "index.json").read_text())
    by_ref = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    platforms = {"v1": {"os": "linux", "architecture": "amd64"},
                 "v2": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    multi = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [dict(by_ref[ref], platform=p) for ref, p in platforms.items()]})
    digest = hashlib.sha256(multi.encode()).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_text(multi)
    index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": f"sha256:{digest}", "size": len(multi),
                           "annotations": {"org.opencontainers.image.ref.name": "multi"}}]
    (layout / "index.json").write_text(json.dumps(index))

    def names(*options):
        out = tmp_path / "r.cpio"
        run_rumpfs("pack", "--no-stubetc", f"oci:{layout}", "-o", out, *options)
        return subprocess.run(["bsdtar", "-tf", str(out)], capture_output=True, text=True,
                              check=True).stdout.split()

    v1_only, v2_only = "opt/app/b", "opt/app/c"
    assert v2_only in names("--platform", "linux/arm64")
    assert v1_only in names("--platform", "linux/amd64")
    assert v2_only in names("--platform", "linux/aarch64/v8")
    # An object's target picks its platform.
    obj = tmp_path / "r.o"
    run_rumpfs("pack", "--no-stubetc", f"oci:{layout}", "-o", obj, "--target", "aarch64",
               "--image-format", "cpio")
    listing = run_rumpfs("ls", obj).out
    assert "/opt/app/c" in listing and "/opt/app/b" not in listing
    res = run_rumpfs("pack", "--no-stubetc", f"oci:{layout}", "-o", tmp_path / "x.cpio",
                     "--platform", "linux/s390x", check=False)
    assert (res.returncode, res.err) == (
        1, f"rumpfs: error: oci:{layout}: no linux/s390x image in the index "
           f"(it has: linux/amd64, linux/arm64/v8; choose with --platform)\n")


@pytest.mark.parametrize("manifest, config, message", [
    ("5", "{}", "manifest.json: a number, not an array of images"),
    ("{\"a\": 1}", "{}", "manifest.json: an object, not an array of images"),
    ("[5]", "{}", "manifest.json: a number where an object belongs"),
    ("[{\"Config\": 5}]", "{}", "manifest.json: Config is a number, not a string"),
    ("[{\"Config\": \"c.json\", \"Layers\": 7}]", "{}",
     "manifest.json: Layers is a number, not an array"),
    ("[{\"Config\": \"c.json\", \"Layers\": [3]}]", "{}",
     "manifest.json: Layers[0] is a number, not a string"),
    ("[{\"Config\": \"c.json\"}]", "[]", "config: an array where an object belongs"),
    ("[{\"Config\": \"c.json\"}]", "{\"config\": []}", "config: config is an array, not an object"),
    ("[{\"Config\": \"c.json\"}]", "{\"rootfs\": {\"diff_ids\": {}}}",
     "config: diff_ids is an object, not an array"),
    ("[{\"Config\": \"c.json\"}]", "{,", "config: not JSON: Expecting property name enclosed in "
                                        "double quotes: line 1 column 2 (char 1)"),
])
def test_docker_archive_of_the_wrong_shape_is_refused(tmp_path, manifest, config, message):
    """manifest.json and the config are JSON the archive's maker chose: any
    other shape than docker save's is one line, not a traceback."""
    save = tmp_path / "save"
    save.mkdir()
    (save / "manifest.json").write_text(manifest)
    (save / "c.json").write_text(config)
    archive = tar_dir(save, tmp_path / "app.tar")
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", f"docker-archive:{archive}", "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: docker-archive:{archive}: {message}\n")
    assert not out.exists()


@pytest.mark.parametrize("index, message", [
    ("[]", "index.json: an array where an object belongs"),
    ("{\"manifests\": {}}", "index.json: manifests is an object, not an array"),
    ("{\"manifests\": [7]}", "index.json: manifests[0] is a number, not an object"),
    ("{\"manifests\": [{\"annotations\": []}, {}]}",
     "index.json: annotations is an array, not an object"),
    ("{\"manifests\": [{\"digest\": 5}]}", "manifest: digest is a number, not a string"),
    ("{\"manifests\": [{\"digest\": \"sha256:ab\", \"size\": \"9\"}]}",
     "manifest: size is a string, not a number"),
])
def test_oci_layout_of_the_wrong_shape_is_refused(tmp_path, index, message):
    root = tmp_path / "image"
    root.mkdir()
    (root / "index.json").write_text(index)
    out = tmp_path / "r.cpio"
    res = run_rumpfs("pack", "--no-stubetc", f"oci:{root}", "-o", out, check=False)
    assert (res.returncode, res.err) == (1, f"rumpfs: error: oci:{root}: {message}\n")
    assert not out.exists()


def test_layer_spools_are_gone_when_pack_returns(layout, tmp_path, monkeypatch):
    """Each gzip layer of the image is decompressed into a spool file: all
    of them removed when ``api.pack`` returns, garbage collection or not."""
    import tempfile

    from rumpfs import api

    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    out = tmp_path / "r.cpio"
    with gc_disabled():
        api.pack([f"oci:{layout}:v2"], str(out), format="cpio", stubetc=False, progress=False)
        assert os.listdir(spools) == []
    assert out.stat().st_size > 0
