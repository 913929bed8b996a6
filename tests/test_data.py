"""Data layer: the real download code (pooch) against a local HTTP server, parsers, the 5-core,
chronological sequences and the synthetic generator."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import sasrec_nb.data as D
from sasrec_nb.data import DataError, DatasetSpec

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO / "data" / "ml-100k" / "u.data"


# -- a small archive in ml-100k format, served over HTTP on 127.0.0.1 --------------------------------
def ml100k_lines(num_users: int = 6, num_items: int = 7) -> bytes:
    """Every user rates every item (so the 5-core keeps all), tab-separated with a timestamp."""
    rows = [f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + 10 * u + i}" for u in range(1, num_users + 1)
            for i in range(1, num_items + 1)]
    return ("\n".join(rows) + "\n").encode()


MEMBER_BYTES = ml100k_lines()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


class Server:
    def __init__(self, directory: Path):
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                log.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.running = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.running = False


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def served(tmp_path, no_proxy):
    """A server holding ``toy.zip`` (member ``toy/u.data``); yields (server, archive bytes)."""
    www = tmp_path / "www"
    www.mkdir()
    archive = make_zip({"toy/u.data": MEMBER_BYTES, "toy/README": b"a toy dataset\n"})
    (www / "toy.zip").write_bytes(archive)
    server = Server(www)
    yield server, archive
    server.stop()


def register(monkeypatch, url, sha, member_sha=None, name="toy") -> DatasetSpec:
    spec = DatasetSpec(name, f"{name}/u.data", D.parse_ml100k, url, sha, member_sha, "Toy")
    monkeypatch.setitem(D.REGISTRY, name, spec)
    return spec


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- fetch / download ------------------------------------------------------------------------------
def test_fetch_downloads_checks_extracts_and_caches(served, tmp_path, monkeypatch):
    server, archive = served
    register(monkeypatch, server.url("toy.zip"), sha256(archive), sha256(MEMBER_BYTES))
    cache = tmp_path / "cache"

    path = D.fetch("toy", root=cache)
    assert path == cache / "toy" / "u.data"
    assert path.read_bytes() == MEMBER_BYTES
    assert (cache / "toy" / "toy.zip").read_bytes() == archive
    assert server.requests == ["/toy.zip"]
    interactions = D.parse_ml100k(path)
    assert len(interactions) == 6 * 7

    server.stop()  # the second call must not need the network
    again = D.fetch("toy", root=cache)
    assert again == path and again.read_bytes() == MEMBER_BYTES
    assert server.requests == ["/toy.zip"]


def test_fetch_extracts_from_a_cached_archive_without_network(tmp_path, monkeypatch):
    archive = make_zip({"toy/u.data": MEMBER_BYTES})
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/toy.zip", sha256(archive), sha256(MEMBER_BYTES))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip").write_bytes(archive)
    assert D.fetch("toy", root=tmp_path).read_bytes() == MEMBER_BYTES


def test_wrong_archive_hash_raises_and_keeps_nothing(served, tmp_path, monkeypatch):
    server, archive = served
    register(monkeypatch, server.url("toy.zip"), "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256") as err:
        D.fetch("toy", root=cache)
    assert "nothing was kept" in str(err.value)
    assert server.requests == ["/toy.zip"]  # it did download, then rejected the bytes
    folder = cache / "toy"
    leftovers = list(folder.rglob("*")) if folder.exists() else []
    assert leftovers == [], f"a rejected download left files behind: {leftovers}"


def test_server_down_error_names_file_and_folder(tmp_path, monkeypatch, no_proxy):
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/toy.zip", "0" * 64)
    with pytest.raises(DataError) as err:
        D.fetch("toy", root=tmp_path)
    msg = str(err.value)
    folder = tmp_path / "toy"
    assert "could not download" in msg
    assert str(folder / "u.data") in msg  # the file to place and where
    assert str(folder / "toy.zip") in msg
    assert not (folder / "u.data").exists() and not (folder / "toy.zip").exists()


def test_cached_ratings_with_wrong_member_hash_says_delete(tmp_path, monkeypatch):
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", "0" * 64, sha256(MEMBER_BYTES))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "u.data").write_bytes(MEMBER_BYTES + b"1\t1\t5\t1\n")
    with pytest.raises(DataError, match="Delete") as err:
        D.fetch("toy", root=tmp_path)
    assert str(tmp_path / "toy") in str(err.value)


def test_cached_ratings_with_right_member_hash_is_used(tmp_path, monkeypatch):
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", "0" * 64, sha256(MEMBER_BYTES))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "u.data").write_bytes(MEMBER_BYTES)
    assert D.fetch("toy", root=tmp_path) == tmp_path / "toy" / "u.data"


def test_cached_archive_with_wrong_hash_says_delete(tmp_path, monkeypatch):
    archive = make_zip({"toy/u.data": MEMBER_BYTES})
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", sha256(archive))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip").write_bytes(archive + b"junk")
    with pytest.raises(DataError, match="delete it"):
        D.fetch("toy", root=tmp_path)
    assert not (tmp_path / "toy" / "u.data").exists()


def test_archive_without_the_member_says_delete(tmp_path, monkeypatch):
    archive = make_zip({"other/u.data": MEMBER_BYTES})
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", sha256(archive))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip").write_bytes(archive)
    with pytest.raises(DataError, match="no member toy/u.data"):
        D.fetch("toy", root=tmp_path)


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'") as err:
        D.fetch("nope", root=tmp_path)
    for name in D.REGISTRY:
        assert name in str(err.value)


def test_not_downloadable_dataset_says_where_to_place_it(tmp_path):
    spec = D.REGISTRY["ml-1m-sasrec-trunc2"]
    with pytest.raises(DataError, match="cannot be downloaded") as err:
        D.fetch("ml-1m-sasrec-trunc2", root=tmp_path)
    assert str(tmp_path / spec.name / spec.filename) in str(err.value)


# -- parsers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("parser, good, bad", [
    (D.parse_ml100k, "1\t10\t5\t881250949", "1\t10\t5"),
    (D.parse_ml100k, "1\t10\t5\t881250949", "1\tx\t5\t881250949"),
    (D.parse_ml1m, "1::1193::5::978300760", "1::1193::5"),
    (D.parse_ml1m, "1::1193::5::978300760", "1,1193,5,978300760"),
    (D.parse_sasrec_text, "1 10", "1"),
    (D.parse_sasrec_text, "1 10", "1 ten"),
])
def test_malformed_line_names_file_and_line(tmp_path, parser, good, bad):
    path = tmp_path / "ratings.txt"
    path.write_text(f"{good}\n\n{good}\n{bad}\n{good}\n")  # the blank line counts: bad is line 4
    with pytest.raises(DataError) as err:
        parser(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg


def test_ml100k_and_ml1m_parsers_read_user_item_time(tmp_path):
    a = tmp_path / "u.data"
    a.write_text("7\t42\t3\t100\n8\t43\t4\t99\n")
    assert D.parse_ml100k(a) == [("7", "42", 100), ("8", "43", 99)]
    b = tmp_path / "ratings.dat"
    b.write_text("7::42::3::100\n8::43::4::99\n")
    assert D.parse_ml1m(b) == [("7", "42", 100), ("8", "43", 99)]
    c = tmp_path / "seq.txt"
    c.write_text("7 42\n\n7 43\n")
    assert D.parse_sasrec_text(c) == [("7", "42", 1), ("7", "43", 3)]  # time is the line number


# -- k-core and sequences --------------------------------------------------------------------------
def core_block(users=("u1", "u2", "u3", "u4", "u5"), items=("i1", "i2", "i3", "i4", "i5")):
    return [(u, i, 0) for u in users for i in items]


def test_k_core_is_iterative():
    core = core_block()
    # Y has 4 interactions (dropped in round 1); that leaves u6..u9 with 4 (dropped in round 2);
    # that leaves Z with 1 (dropped in round 3) although it had 5 at the start.
    extra = []
    for u in ("u6", "u7", "u8", "u9"):
        extra += [(u, "Y", 1), (u, "Z", 1), (u, "i1", 1), (u, "i2", 1), (u, "i3", 1)]
    extra.append(("u1", "Z", 2))
    kept = D.k_core(core + extra, 5)
    assert sorted(kept) == sorted(core)
    # a single pass would have kept Z and u6..u9: the iteration is what removes them
    users = Counter(u for u, _, _ in core + extra)
    items = Counter(i for _, i, _ in core + extra)
    one_pass = [r for r in core + extra if users[r[0]] >= 5 and items[r[1]] >= 5]
    assert any(i == "Z" for _, i, _ in one_pass)


def test_nothing_left_after_filtering_raises():
    interactions = [(f"u{u}", f"i{i}", 0) for u in range(10) for i in range(u, u + 3)]
    with pytest.raises(DataError, match="no interaction is left"):
        D.build_sequences(interactions, "tiny")


def test_sequences_are_chronological_with_stable_ties():
    items = ("a", "b", "c", "d", "e")
    rows = []
    for u in ("u1", "u2", "u3", "u4", "u5"):
        times = {"u1": (3, 1, 2, 2, 1), "u2": (5, 4, 3, 2, 1)}.get(u, (0, 0, 0, 0, 0))
        rows += [(u, i, t) for i, t in zip(items, times)]
    # file order of u3 differs from the item order: ties must keep the file order
    rows = [r for r in rows if r[0] != "u3"] + [("u3", i, 0) for i in ("e", "c", "a", "d", "b")]
    data = D.build_sequences(rows, "ties")
    by_user = {f"u{k + 1}": [data.item_ids[i] for i in s] for k, s in enumerate(data.sequences)}
    assert by_user["u1"] == ["b", "e", "c", "d", "a"]
    assert by_user["u2"] == ["e", "d", "c", "b", "a"]
    assert by_user["u3"] == ["e", "c", "a", "d", "b"]
    assert by_user["u4"] == ["a", "b", "c", "d", "e"]


def test_item_ids_are_1_to_n():
    rows = core_block(items=("10", "9", "200", "3", "77"))
    data = D.build_sequences(rows, "ids")
    assert data.num_items == 5
    assert sorted(set(np.concatenate(data.sequences).tolist())) == [1, 2, 3, 4, 5]
    assert data.item_ids[0] == ""
    assert list(data.item_ids[1:]) == ["3", "9", "10", "77", "200"]  # numeric-looking ids in numeric order
    assert data.num_users == 5 and data.num_interactions == 25 and data.num_raw_interactions == 25


def test_sasrec_text_file_loads_by_path(tmp_path):
    path = tmp_path / "mine.txt"
    lines = []
    for u in range(1, 6):
        order = list(range(1, 7)) if u % 2 else list(range(6, 0, -1))
        lines += [f"{u} {i}" for i in order]
    lines += ["9 1", "9 2"]  # a user with 2 interactions: dropped by the 5-core
    path.write_text("\n".join(lines) + "\n")
    data = D.load_dataset(str(path))
    assert data.name == "mine"
    assert data.num_users == 5 and data.num_items == 6 and data.num_interactions == 30
    assert data.num_raw_interactions == 32
    assert [data.item_ids[i] for i in data.sequences[0]] == ["1", "2", "3", "4", "5", "6"]
    assert [data.item_ids[i] for i in data.sequences[1]] == ["6", "5", "4", "3", "2", "1"]


def test_missing_text_file_raises(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        D.load_dataset(str(tmp_path / "absent.txt"))


@pytest.mark.skipif(not ML100K.exists(), reason=f"{ML100K} is not there (downloaded on first use)")
def test_ml100k_after_5core_has_the_measured_size():
    path = D.fetch("ml-100k", root=ML100K.parent.parent)  # also checks the member sha256
    data = D.build_sequences(D.parse_ml100k(path), "ml-100k")
    assert data.num_raw_interactions == 100_000
    assert (data.num_users, data.num_items, data.num_interactions) == (943, 1349, 99_287)
    assert min(len(s) for s in data.sequences) >= 5


# -- synthetic -------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_per_seed():
    a, b = D.synthetic(100, 50, 15, seed=3), D.synthetic(100, 50, 15, seed=3)
    c = D.synthetic(100, 50, 15, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))


def test_synthetic_shape_and_long_tail():
    data = D.synthetic(num_users=400, num_items=100, mean_len=20, seed=0)
    assert data.num_users == 400 and data.num_items == 100
    assert min(len(s) for s in data.sequences) >= 5
    flat = np.concatenate(data.sequences)
    assert flat.min() >= 1 and flat.max() <= 100
    counts = np.sort(np.bincount(flat, minlength=101)[1:])[::-1]
    top_share = counts[:10].sum() / counts.sum()
    assert top_share > 0.3, top_share  # uniform popularity would give 0.10
    # a uniform generator fails the same check
    flat_uniform = np.random.default_rng(0).integers(1, 101, size=len(flat))
    uniform = np.sort(np.bincount(flat_uniform, minlength=101)[1:])[::-1]
    assert uniform[:10].sum() / uniform.sum() < 0.2


def successor_rate(data) -> float:
    """Share of transitions that go to the most frequent successor of their source item."""
    pairs = Counter()
    for s in data.sequences:
        pairs.update(zip(s[:-1].tolist(), s[1:].tolist()))
    best: dict[int, int] = {}
    for (a, _), n in pairs.items():
        best[a] = max(best.get(a, 0), n)
    return sum(best.values()) / sum(pairs.values())


def test_synthetic_has_planted_successors():
    planted = successor_rate(D.synthetic(num_users=300, num_items=60, mean_len=20, seed=0))
    unstructured = successor_rate(D.synthetic(num_users=300, num_items=60, mean_len=20, seed=0, follow=0.0))
    assert planted > 0.75, planted
    assert unstructured < 0.4, unstructured


# -- inputs that must never lose or corrupt data (issue: no input loses data) ------------------------------------
def test_interrupted_extraction_leaves_no_file_and_a_cut_file_is_extracted_again(tmp_path, monkeypatch):
    archive = make_zip({"toy/u.data": MEMBER_BYTES})
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", sha256(archive))  # no member hash: like ml-1m, ml-20m
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.zip").write_bytes(archive)

    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(D.files, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        D.fetch("toy", root=tmp_path)
    monkeypatch.undo()
    register(monkeypatch, "http://127.0.0.1:9/toy.zip", sha256(archive))
    assert not (folder / "u.data").exists()
    # a file an older version left half-written: detected by its size in the archive, extracted again
    (folder / "u.data").write_bytes(MEMBER_BYTES[: len(MEMBER_BYTES) // 2])
    assert D.fetch("toy", root=tmp_path).read_bytes() == MEMBER_BYTES


def test_the_stand_in_with_a_wrong_hash_is_never_to_be_deleted(tmp_path):
    spec = D.REGISTRY["ml-1m-sasrec-trunc2"]
    (tmp_path / spec.name).mkdir()
    (tmp_path / spec.name / spec.filename).write_text("1 2\n")
    with pytest.raises(DataError, match="cannot be downloaded; replace it with a good copy") as err:
        D.fetch(spec.name, root=tmp_path)
    assert "delete" not in str(err.value).lower()


def custom_lines(users: int = 5, items: int = 6) -> list[str]:
    return [f"{u} {i}" for u in range(1, users + 1) for i in range(1, items + 1)]


def test_a_custom_file_needs_no_txt_suffix(tmp_path):
    path = tmp_path / "interactions.tsv"
    path.write_text("\n".join(custom_lines()) + "\n")
    assert D.load_dataset(str(path)).num_interactions == 30


def test_a_third_column_is_the_timestamp(tmp_path):
    path = tmp_path / "timed.txt"
    # user 1 lists items 1..6 in file order but with decreasing timestamps: time order is 6..1
    lines = [f"1 {i} {100 - i}" for i in range(1, 7)] + [f"{u} {i} {i}" for u in range(2, 6) for i in range(1, 7)]
    path.write_text("\n".join(lines) + "\n")
    data = D.load_dataset(str(path))
    first = next(s for s in data.sequences if [data.item_ids[i] for i in s][0] == "6")
    assert [data.item_ids[i] for i in first] == ["6", "5", "4", "3", "2", "1"]


@pytest.mark.parametrize("lines,message", [
    (["1 2 3", "1 3"], "2 columns where the file's first line has 3"),
    (["1 2 3 4", "1 3 4 5"], "4 columns"),
    (["1 2 x", "1 3 y"], "third column must be an integer timestamp"),
])
def test_inconsistent_or_unknown_columns_are_refused(tmp_path, lines, message):
    path = tmp_path / "odd.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        D.load_dataset(str(path))
