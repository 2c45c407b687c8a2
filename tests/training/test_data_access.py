"""The data-URI check (``check_data_uri``) as an attacker would probe it: unit tests of the pure function,
and the read path that only follows a path it allowed (no file outside the data directory is touched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlstack.auth import Principal
from mlstack.errors import InvalidInput, NotFound
from mlstack.training.access import DataPolicy, check_data_uri, upload_uri
from mlstack.training.data import ObjectStore, check_exists, read_bytes

DEFAULT = "s3://mlops/data/iris.csv"
ACME = Principal("dana", "kubernetes", "org-acme", org="acme")
PLATFORM = Principal("system:serviceaccount:mlstack:mlstack-admin", "kubernetes", "mlstack")
LOCAL_DEPLOYER = Principal("dep", "token", "models", role="deployer")


def local(data_dir: Path | None) -> DataPolicy:
    return DataPolicy(mode="local", data_dir=data_dir, default_uri=DEFAULT, shared_prefixes=("s3://mlops/data/",))


CLUSTER = DataPolicy(mode="cluster", data_dir=None, default_uri=DEFAULT, shared_prefixes=("s3://mlops/data/",),
                     org_prefix="s3://mlops/orgs/{org}/")

ESCAPES = ["/etc/shadow", "/etc/passwd", "/proc/self/environ", "file:///etc/passwd", "file://localhost/etc/passwd",
           "../outputs/credentials.txt", "../../../../etc/passwd", "a/../../etc/passwd",
           "./../x.csv", "file:///proc/self/environ", "file://evil.example/etc/passwd", "http://169.254.169.254/x",
           "gs://bucket/x.csv", "hdfs://nn/x.csv", "ftp://x/y.csv", "data:text/csv,a,b", "x\x00.csv", "a\\..\\b.csv",
           "s3://mlops/../etc/passwd", "s3://mlops/data/../../x", "s3://mlops//x", "s3://MLOPS/x.csv", "s3:///x.csv",
           "s3://mlops/", "s3://mlops/x.csv?versionId=1", "x" * 2000, "s3://mlops/" + "y" * 300 + ".csv",
           "y" * 300 + ".csv"]


@pytest.mark.parametrize("uri", ESCAPES)
def test_local_mode_refuses_everything_outside_the_data_dir(tmp_path, uri):
    with pytest.raises(InvalidInput) as e:
        check_data_uri(uri, LOCAL_DEPLOYER, local(tmp_path / "data"))
    assert "root:" not in e.value.message and len(e.value.message) < 400


def test_the_answer_does_not_depend_on_whether_the_file_exists(tmp_path):
    """No existence oracle: a present and a missing file outside the data dir get the same 422."""
    policy = local(tmp_path / "data")
    (tmp_path / "present.csv").write_text("a,b\n")
    answers = []
    for name in ("present.csv", "missing.csv"):
        with pytest.raises(InvalidInput) as e:
            check_data_uri(str(tmp_path / name), LOCAL_DEPLOYER, policy)
        answers.append(e.value.message.replace(name, "NAME"))
    assert answers[0] == answers[1]


def test_local_paths_inside_the_data_dir(tmp_path):
    root = tmp_path / "data"
    policy = local(root)
    assert check_data_uri("iris.csv", LOCAL_DEPLOYER, policy) == str(root / "iris.csv")
    assert check_data_uri("sub/dir/x.csv", LOCAL_DEPLOYER, policy) == str(root / "sub/dir/x.csv")
    # a relative path names a file in the data dir, never one relative to the API's working directory
    assert check_data_uri("outputs/credentials.txt", LOCAL_DEPLOYER, policy) == str(root / "outputs/credentials.txt")
    assert check_data_uri(str(root / "x.csv"), LOCAL_DEPLOYER, policy) == str(root / "x.csv")
    assert check_data_uri(f"file://{root}/x.csv", LOCAL_DEPLOYER, policy) == str(root / "x.csv")
    # a sibling whose name starts like the data dir is outside it
    with pytest.raises(InvalidInput):
        check_data_uri(str(tmp_path / "data-evil" / "x.csv"), LOCAL_DEPLOYER, policy)


def test_no_data_dir_means_no_local_paths(tmp_path):
    with pytest.raises(InvalidInput, match="MLSTACK_DATA_DIR"):
        check_data_uri("iris.csv", LOCAL_DEPLOYER, local(None))


def test_object_store_uris_in_local_mode(tmp_path):
    assert check_data_uri("s3://mlops/data/iris.csv", LOCAL_DEPLOYER, local(None)) == "s3://mlops/data/iris.csv"
    assert check_data_uri("s3://other-bucket/a/b.csv", LOCAL_DEPLOYER, local(None)) == "s3://other-bucket/a/b.csv"


def test_cluster_member_reads_own_org_and_platform_data_only():
    assert check_data_uri("s3://mlops/orgs/acme/train.csv", ACME, CLUSTER) == "s3://mlops/orgs/acme/train.csv"
    assert check_data_uri("s3://mlops/orgs/acme/uploads/x.csv", ACME, CLUSTER)
    assert check_data_uri(DEFAULT, ACME, CLUSTER) == DEFAULT
    assert check_data_uri("s3://mlops/data/wine.csv", ACME, CLUSTER)
    for uri in ["s3://mlops/orgs/globex/secret.csv", "s3://mlops/orgs/acme2/x.csv", "s3://mlops/orgs/acme",
                "s3://mlops/uploads/0123.csv", "s3://other/x.csv", "s3://mlops/orgs/acme/../globex/x.csv",
                "s3://mlops/datax/y.csv", "/etc/passwd", "iris.csv", "file:///etc/passwd"]:
        with pytest.raises(InvalidInput):
            check_data_uri(uri, ACME, CLUSTER)


def test_cluster_platform_identity_reads_any_object_but_no_local_path():
    assert check_data_uri("s3://mlops/orgs/globex/x.csv", PLATFORM, CLUSTER)
    assert check_data_uri("s3://other/x.csv", None, CLUSTER)
    with pytest.raises(InvalidInput, match="cluster mode"):
        check_data_uri("/work/data/x.csv", PLATFORM, CLUSTER)


def test_uploads_of_a_member_land_in_their_prefix():
    assert upload_uri("s3://mlops/uploads", "u.csv", ACME, CLUSTER) == "s3://mlops/orgs/acme/uploads/u.csv"
    assert check_data_uri(upload_uri("s3://mlops/uploads", "u.csv", ACME, CLUSTER), ACME, CLUSTER)
    assert upload_uri("s3://mlops/uploads/", "u.csv", PLATFORM, CLUSTER) == "s3://mlops/uploads/u.csv"


def test_a_symlink_in_the_data_dir_cannot_lead_out(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("PASSWORD=hunter2\n")
    os.symlink(secret, root / "link.csv")
    (root / "ok.csv").write_text("a,target\n1,0\n")
    store = ObjectStore(data_dir=str(root))
    uri = check_data_uri("link.csv", LOCAL_DEPLOYER, local(root))  # lexically fine ...
    with pytest.raises(InvalidInput) as e:  # ... but the read refuses it
        read_bytes(uri, store)
    assert "hunter2" not in e.value.message
    with pytest.raises(InvalidInput):
        check_exists(uri, store)
    assert read_bytes(check_data_uri("ok.csv", LOCAL_DEPLOYER, local(root)), store).startswith(b"a,target")
    with pytest.raises(NotFound):
        check_exists(check_data_uri("nope.csv", LOCAL_DEPLOYER, local(root)), store)


def test_the_reader_refuses_paths_even_without_the_check(tmp_path):
    """Defence in depth: the worker's read follows only paths inside the store's data directory."""
    with pytest.raises(InvalidInput):
        read_bytes("/etc/passwd", ObjectStore(data_dir=str(tmp_path)))
    with pytest.raises(InvalidInput):
        read_bytes("/etc/passwd", ObjectStore())


def test_a_long_object_store_key_is_422_not_500(tmp_path):
    store = ObjectStore(local_dir=str(tmp_path))
    uri = "s3://mlops/" + "k" * 250 + "/" + "z" * 250 + ".csv"
    assert check_data_uri(uri, None, local(None)) == uri
    with pytest.raises(NotFound):
        check_exists(uri, store)
