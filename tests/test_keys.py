"""Key files, recovery phrases and the passphrase sources of wallet.keys."""

from __future__ import annotations

import base64
import getpass
import io
import json
import os
import stat
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from wallet import keys
from wallet.encoding import key_text
from wallet.errors import BadPhrase, KeyFileError
from wallet.keys import (
    FAST_INSECURE,
    INTERACTIVE,
    SENSITIVE,
    KdfLimits,
    decrypt_secret,
    encrypt_secret,
    load_key,
    passphrase_from_env,
    phrase_from_seed,
    read_key_info,
    save_key,
    seed_from_phrase,
    write_key_file,
)

SEED = bytes(range(32))
PASS = "correct horse battery staple"


def _doc(seed: bytes = SEED, kind: str = "account") -> dict:
    return json.loads(encrypt_secret(seed, PASS, kind=kind, limits=FAST_INSECURE))


def _bytes(doc: dict) -> bytes:
    return json.dumps(doc).encode()


# --- limits ---------------------------------------------------------------------------


def test_limit_constants() -> None:
    assert KdfLimits(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE) == INTERACTIVE
    assert KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN) == FAST_INSECURE
    assert SENSITIVE.opslimit * SENSITIVE.memlimit > INTERACTIVE.opslimit * INTERACTIVE.memlimit
    with pytest.raises(AttributeError):
        INTERACTIVE.opslimit = 1  # type: ignore[misc]


# --- encrypt / decrypt ----------------------------------------------------------------


@pytest.mark.parametrize("kind", keys.KINDS)
def test_round_trip_every_kind(kind: str) -> None:
    data = encrypt_secret(SEED, PASS, kind=kind, limits=FAST_INSECURE)
    got_kind, key = decrypt_secret(data, PASS)
    assert got_kind == kind
    assert bytes(key) == SEED


def test_document_fields() -> None:
    data = encrypt_secret(SEED, PASS, kind="device", limits=FAST_INSECURE)
    doc = json.loads(data.decode("utf-8"))
    assert doc["format"] == "tallystick-key"
    assert doc["version"] == 1
    assert doc["kind"] == "device"
    assert doc["public"] == key_text(bytes(SigningKey(SEED).verify_key))
    assert doc["public"] == doc["public"].lower() and "=" not in doc["public"]
    kdf = doc["kdf"]
    assert kdf["name"] == "argon2id"
    assert (kdf["opslimit"], kdf["memlimit"]) == (FAST_INSECURE.opslimit, FAST_INSECURE.memlimit)
    assert len(base64.b64decode(kdf["salt"])) == argon2id.SALTBYTES
    assert len(base64.b64decode(doc["box"])) == 24 + 32 + 16


def test_seed_never_in_the_clear() -> None:
    data = encrypt_secret(SEED, PASS, kind="account", limits=FAST_INSECURE)
    for form in (SEED, SEED.hex().encode(), base64.b64encode(SEED), key_text(SEED).encode()):
        assert form not in data
    assert PASS.encode() not in data


def test_fresh_salt_and_nonce_each_time() -> None:
    a = json.loads(encrypt_secret(SEED, PASS, kind="account", limits=FAST_INSECURE))
    b = json.loads(encrypt_secret(SEED, PASS, kind="account", limits=FAST_INSECURE))
    assert a["kdf"]["salt"] != b["kdf"]["salt"]
    assert a["box"] != b["box"]


def test_default_limits_are_interactive() -> None:
    doc = json.loads(encrypt_secret(SEED, PASS, kind="account"))
    assert (doc["kdf"]["opslimit"], doc["kdf"]["memlimit"]) == (
        INTERACTIVE.opslimit,
        INTERACTIVE.memlimit,
    )
    assert bytes(decrypt_secret(_bytes(doc), PASS)[1]) == SEED


def test_passphrase_unicode_normalisation() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    data = encrypt_secret(SEED, composed, kind="account", limits=FAST_INSECURE)
    assert bytes(decrypt_secret(data, decomposed)[1]) == SEED


def test_encrypt_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_secret(SEED[:31], PASS, kind="account", limits=FAST_INSECURE)
    with pytest.raises(ValueError, match="unknown key kind"):
        encrypt_secret(SEED, PASS, kind="wallet", limits=FAST_INSECURE)
    with pytest.raises(ValueError, match="memlimit"):
        encrypt_secret(SEED, PASS, kind="account", limits=KdfLimits(1, 2 << 30))
    with pytest.raises(KeyFileError, match="empty passphrase"):
        encrypt_secret(SEED, "", kind="account", limits=FAST_INSECURE)


WRONG_ACCOUNT = r"^wrong passphrase for the account key \(or the key file is damaged"


def test_wrong_passphrase() -> None:
    data = encrypt_secret(SEED, PASS, kind="account", limits=FAST_INSECURE)
    with pytest.raises(KeyFileError, match=WRONG_ACCOUNT):
        decrypt_secret(data, PASS + "!")


def test_wrong_passphrase_names_source() -> None:
    data = encrypt_secret(SEED, PASS, kind="device", limits=FAST_INSECURE)
    with pytest.raises(KeyFileError, match=r"wrong passphrase for the device key in /x/d\.key "):
        decrypt_secret(data, "nope", source="/x/d.key")


@pytest.mark.parametrize("source",
                         [None, "", "the device key", "device key", "The device key file"])
def test_wrong_passphrase_reads_naturally_whatever_the_source(source: str | None) -> None:
    """A source that only names the key again (as the wallet's ``load_key`` passes) is
    not repeated: never ``... for the device key file the device key``."""
    data = encrypt_secret(SEED, PASS, kind="device", limits=FAST_INSECURE)
    with pytest.raises(KeyFileError) as info:
        decrypt_secret(data, "nope", source=source)
    assert str(info.value) == (
        "wrong passphrase for the device key (or the key file is damaged: if the "
        "passphrase is right, restore the key from a backup)")
    with pytest.raises(KeyFileError) as info:
        decrypt_secret(b"{}", "nope", source=source)
    msg = str(info.value)
    assert "not a Tallystick key file" in msg and "file the" not in msg and "key the" not in msg


def test_tampered_box() -> None:
    doc = _doc()
    box = bytearray(base64.b64decode(doc["box"]))
    box[30] ^= 1
    doc["box"] = base64.b64encode(bytes(box)).decode()
    with pytest.raises(KeyFileError, match=WRONG_ACCOUNT):
        decrypt_secret(_bytes(doc), PASS)


def test_tampered_salt() -> None:
    doc = _doc()
    salt = bytearray(base64.b64decode(doc["kdf"]["salt"]))
    salt[0] ^= 1
    doc["kdf"]["salt"] = base64.b64encode(bytes(salt)).decode()
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        decrypt_secret(_bytes(doc), PASS)


def test_tampered_public_key() -> None:
    doc = _doc()
    doc["public"] = key_text(bytes(SigningKey(bytes(32)).verify_key))
    with pytest.raises(KeyFileError, match="encrypted seed belongs to") as info:
        decrypt_secret(_bytes(doc), PASS)
    assert "altered" in str(info.value)


def test_tampered_kind_does_not_open() -> None:
    doc = _doc(kind="device")
    doc["kind"] = "account"
    with pytest.raises(KeyFileError, match=WRONG_ACCOUNT):
        decrypt_secret(_bytes(doc), PASS)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a Tallystick key file"),
        (b'{"format": "other"}', "not a Tallystick key file"),
        (b"x" * (keys.KEY_FILE_BYTES_MAX + 1), "too large"),
    ],
)
def test_not_a_key_file(data: bytes, match: str) -> None:
    with pytest.raises(KeyFileError, match=match):
        decrypt_secret(data, PASS)


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_unknown_version(version: object) -> None:
    doc = _doc()
    doc["version"] = version
    with pytest.raises(KeyFileError, match="unknown key file version"):
        decrypt_secret(_bytes(doc), PASS)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(kind="wallet"), "unknown key kind"),
        (lambda d: d.pop("public"), "'public'"),
        (lambda d: d.update(public="not base32!"), "public key"),
        (lambda d: d.update(public=key_text(bytes(16))), "public key"),
        (lambda d: d.update(kdf="argon2id"), "unsupported KDF"),
        (lambda d: d["kdf"].update(name="scrypt"), "unsupported KDF"),
        (lambda d: d["kdf"].update(salt="%%%"), "not base64"),
        (lambda d: d["kdf"].update(salt=base64.b64encode(bytes(8)).decode()), "8 bytes"),
        (lambda d: d["kdf"].pop("salt"), "kdf.salt"),
        (lambda d: d.update(box=base64.b64encode(bytes(40)).decode()), "40 bytes"),
        (lambda d: d.update(box=12), "'box'"),
    ],
)
def test_malformed_fields(mutate, match: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(KeyFileError, match=match):
        decrypt_secret(_bytes(doc), PASS)


@pytest.mark.parametrize(
    ("opslimit", "memlimit", "match"),
    [
        (2, (1 << 30) + 1024, "memlimit"),
        (2, 1 << 42, "memlimit"),
        (2, 1024, "memlimit"),
        (10**9, argon2id.MEMLIMIT_MIN, "opslimit"),
        (0, argon2id.MEMLIMIT_MIN, "opslimit"),
        (-1, argon2id.MEMLIMIT_MIN, "opslimit"),
        (2.5, argon2id.MEMLIMIT_MIN, "not an integer"),
        ("2", argon2id.MEMLIMIT_MIN, "not an integer"),
        (True, argon2id.MEMLIMIT_MIN, "not an integer"),
        (2, None, "not an integer"),
    ],
)
def test_hostile_kdf_limits_refused_before_deriving(
    monkeypatch: pytest.MonkeyPatch, opslimit: object, memlimit: object, match: str
) -> None:
    def no_kdf(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the KDF ran on refused limits")

    doc = _doc()
    doc["kdf"]["opslimit"] = opslimit
    doc["kdf"]["memlimit"] = memlimit
    monkeypatch.setattr(argon2id, "kdf", no_kdf)
    with pytest.raises(KeyFileError, match=f"refusing its KDF limits: .*{match}"):
        decrypt_secret(_bytes(doc), PASS)


def test_limits_at_the_ceiling_are_accepted() -> None:
    # 1 GiB is the ceiling itself; checked without running the KDF (it would take seconds).
    assert keys._limits_problem(keys.OPSLIMIT_CEILING, keys.MEMLIMIT_CEILING) is None
    assert keys._limits_problem(keys.OPSLIMIT_CEILING + 1, keys.MEMLIMIT_CEILING) is not None
    assert keys._limits_problem(SENSITIVE.opslimit, SENSITIVE.memlimit) is None


# --- files ----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "account.key"
    save_key(path, key, PASS, kind="account", limits=FAST_INSECURE)
    loaded = load_key(path, PASS)
    assert bytes(loaded) == bytes(key)
    assert read_key_info(path) == ("account", bytes(key.verify_key))
    assert load_key(path, PASS, kind="account").verify_key == key.verify_key


def test_saved_file_mode_is_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "device.key"
        save_key(path, SigningKey.generate(), PASS, kind="device", limits=FAST_INSECURE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    save_key(tmp_path / "a.key", SigningKey.generate(), PASS, kind="node", limits=FAST_INSECURE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key"]


def test_save_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "account.key"
    first = SigningKey.generate()
    save_key(path, first, PASS, kind="account", limits=FAST_INSECURE)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_key(path, SigningKey.generate(), PASS, kind="account", limits=FAST_INSECURE)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["account.key"]


def test_save_refuses_overwrite_of_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "account.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_key(link, SigningKey.generate(), PASS, kind="account", limits=FAST_INSECURE)
    assert not (tmp_path / "elsewhere").exists()


def test_save_refuses_if_file_appears_during_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "account.key"
    real_encrypt = keys.encrypt_secret

    def racing_encrypt(*args, **kwargs) -> bytes:
        out = real_encrypt(*args, **kwargs)
        path.write_bytes(b"someone else's key")
        return out

    monkeypatch.setattr(keys, "encrypt_secret", racing_encrypt)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_key(path, SigningKey.generate(), PASS, kind="account", limits=FAST_INSECURE)
    assert path.read_bytes() == b"someone else's key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["account.key"]


def test_write_key_file_replaces_whole_and_0600_or_refuses(tmp_path: Path) -> None:
    path = tmp_path / "export.key"
    old = encrypt_secret(SEED, PASS, kind="device", limits=FAST_INSECURE)
    new = encrypt_secret(SEED, "another passphrase", kind="device", limits=FAST_INSECURE)
    write_key_file(path, old)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_key_file(path, new)
    assert path.read_bytes() == old
    os.chmod(path, 0o644)
    write_key_file(path, new, replace=True)  # renamed over: a new inode, mode 0600
    assert path.read_bytes() == new and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.key"]
    with pytest.raises(KeyFileError, match="does not exist"):
        write_key_file(tmp_path / "no" / "a.key", new)


def test_write_key_file_that_fails_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.os, "fsync", full_disk)
    with pytest.raises(KeyFileError, match=r"cannot write key file .*No space left"):
        save_key(tmp_path / "node.key", SigningKey.generate(), PASS, kind="node",
                 limits=FAST_INSECURE)
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        save_key(tmp_path / "no" / "a.key", SigningKey.generate(), PASS, kind="account")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file at"):
        load_key(tmp_path / "absent.key", PASS)
    with pytest.raises(KeyFileError, match="no key file at"):
        read_key_info(tmp_path / "absent.key")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="directory"):
        load_key(tmp_path, PASS)


def test_load_wrong_passphrase_names_path(tmp_path: Path) -> None:
    path = tmp_path / "account.key"
    save_key(path, SigningKey.generate(), PASS, kind="account", limits=FAST_INSECURE)
    with pytest.raises(KeyFileError, match="wrong passphrase for the account key in ") as info:
        load_key(path, "guess")
    assert str(path) in str(info.value)


def test_load_refuses_other_kind(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    save_key(path, SigningKey.generate(), PASS, kind="device", limits=FAST_INSECURE)
    with pytest.raises(KeyFileError, match="holds a device key, not the account key"):
        load_key(path, PASS, kind="account")


def test_read_key_info_needs_no_passphrase_but_checks_structure(tmp_path: Path) -> None:
    path = tmp_path / "w.key"
    path.write_bytes(encrypt_secret(SEED, PASS, kind="witness", limits=FAST_INSECURE))
    assert read_key_info(path) == ("witness", bytes(SigningKey(SEED).verify_key))
    doc = json.loads(path.read_bytes())
    doc["kdf"]["memlimit"] = 1 << 40
    path.write_bytes(_bytes(doc))
    with pytest.raises(KeyFileError, match="memlimit"):
        read_key_info(path)


# --- recovery phrase ------------------------------------------------------------------

# BIP-39 test vector (Trezor's vectors.json): 32 bytes of 0x7f.
VECTOR_SEED = bytes([0x7F]) * 32
VECTOR_PHRASE = (
    "legal winner thank year wave sausage worth useful legal winner thank year wave sausage "
    "worth useful legal winner thank year wave sausage worth title"
)


def test_phrase_matches_bip39_vector() -> None:
    assert phrase_from_seed(VECTOR_SEED) == VECTOR_PHRASE
    assert seed_from_phrase(VECTOR_PHRASE) == VECTOR_SEED


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_phrase_round_trip(seed: bytes) -> None:
    phrase = phrase_from_seed(seed)
    assert len(phrase.split()) == 24
    assert seed_from_phrase(phrase) == seed


def test_phrase_normalises_case_and_whitespace() -> None:
    messy = "  " + "\n".join(w.upper() if i % 2 else w for i, w in enumerate(VECTOR_PHRASE.split()))
    messy = messy.replace("\n", " \t\n  ", 3) + "\n"
    assert seed_from_phrase(messy) == VECTOR_SEED


def test_phrase_from_seed_refuses_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        phrase_from_seed(bytes(16))


@pytest.mark.parametrize("count", [0, 1, 12, 23, 25])
def test_phrase_wrong_word_count(count: int) -> None:
    words = (VECTOR_PHRASE.split() * 2)[:count]
    with pytest.raises(BadPhrase, match=f"24 words, this one has {count}"):
        seed_from_phrase(" ".join(words))


def test_phrase_typo_names_word_position_and_suggestion() -> None:
    words = VECTOR_PHRASE.split()
    words[2] = "thnak"  # "thank", letters swapped
    with pytest.raises(BadPhrase) as info:
        seed_from_phrase(" ".join(words))
    msg = str(info.value)
    assert "word 3" in msg and "'thnak'" in msg
    assert "did you mean" in msg and "'thank'" in msg


def test_phrase_unknown_word_without_suggestion() -> None:
    words = VECTOR_PHRASE.split()
    words[23] = "qqqqqqqq"
    with pytest.raises(BadPhrase, match="word 24, 'qqqqqqqq', is not a BIP-39") as info:
        seed_from_phrase(" ".join(words))
    assert "did you mean" not in str(info.value)


def test_phrase_several_unknown_words_all_named() -> None:
    words = VECTOR_PHRASE.split()
    words[0], words[9] = "bitcoin", "ethereum"
    with pytest.raises(BadPhrase) as info:
        seed_from_phrase(" ".join(words))
    assert "word 1" in str(info.value) and "word 10" in str(info.value)


def test_phrase_four_letter_prefix_suggested() -> None:
    words = VECTOR_PHRASE.split()
    words[0] = "legl"
    with pytest.raises(BadPhrase, match="'legal'"):
        seed_from_phrase(" ".join(words))


def test_phrase_swapped_words_fail_checksum() -> None:
    words = phrase_from_seed(SEED).split()
    i, j = next(
        (i, j)
        for i in range(24)
        for j in range(i + 1, 24)
        if words[i] != words[j] and _checksum_breaks(words, i, j)
    )
    words[i], words[j] = words[j], words[i]
    with pytest.raises(BadPhrase, match="checksum failed"):
        seed_from_phrase(" ".join(words))


def _checksum_breaks(words: list[str], i: int, j: int) -> bool:
    w = list(words)
    w[i], w[j] = w[j], w[i]
    return not keys._MNEMONIC.check(" ".join(w))


def test_phrase_wrong_valid_word_fails_checksum() -> None:
    words = VECTOR_PHRASE.split()
    words[5] = "abandon"  # a valid word, but not this one
    with pytest.raises(BadPhrase, match="checksum failed"):
        seed_from_phrase(" ".join(words))


# --- passphrase sources ---------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("TALLY_PASSPHRASE", raising=False)
    monkeypatch.delenv("TALLY_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a tty

    def no_prompt(prompt: str = "") -> str:
        raise AssertionError("prompted when it should not have")

    monkeypatch.setattr(getpass, "getpass", no_prompt)
    return monkeypatch


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_env_passphrase(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("TALLY_PASSPHRASE", "from env")
    other = tmp_path / "pass"
    other.write_text("from file\n")
    clean_env.setenv("TALLY_PASSPHRASE_FILE", str(other))
    assert passphrase_from_env() == "from env"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"secret\n", "secret"),
        (b"secret", "secret"),
        (b"secret\r\n", "secret"),
        (b"two  spaces \n\n", "two  spaces \n"),
        ("p\u00e4ss\n".encode(), "p\u00e4ss"),
    ],
)
def test_passphrase_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    clean_env.setenv("TALLY_PASSPHRASE_FILE", str(path))
    assert passphrase_from_env() == expected


def test_empty_env_falls_through_to_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_text("from file\n")
    clean_env.setenv("TALLY_PASSPHRASE", "")
    clean_env.setenv("TALLY_PASSPHRASE_FILE", str(path))
    assert passphrase_from_env() == "from file"


def test_passphrase_file_missing(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("TALLY_PASSPHRASE_FILE", str(tmp_path / "absent"))
    with pytest.raises(KeyFileError, match="cannot read the passphrase file"):
        passphrase_from_env()


def test_passphrase_file_empty(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_text("\n")
    clean_env.setenv("TALLY_PASSPHRASE_FILE", str(path))
    with pytest.raises(KeyFileError, match="is empty"):
        passphrase_from_env()


def test_prompt_when_tty(clean_env: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        asked.append(prompt)
        return "typed"

    clean_env.setattr("sys.stdin", _Tty())
    clean_env.setattr(getpass, "getpass", fake_getpass)
    assert passphrase_from_env("Account passphrase: ") == "typed"
    assert asked == ["Account passphrase: "]


def test_prompt_empty_answer(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr("sys.stdin", _Tty())
    clean_env.setattr(getpass, "getpass", lambda prompt="": "")
    with pytest.raises(KeyFileError, match="empty passphrase"):
        passphrase_from_env()


def test_no_passphrase_anywhere(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        KeyFileError, match="no passphrase: set TALLY_PASSPHRASE or TALLY_PASSPHRASE_FILE"
    ):
        passphrase_from_env()


def test_no_stdin_at_all(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr("sys.stdin", None)
    with pytest.raises(KeyFileError, match="no passphrase"):
        passphrase_from_env()
