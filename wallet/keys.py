"""Secret keys at rest, and the account key's recovery phrase (DESIGN §1).

A key file is a small JSON document; the 32-byte Ed25519 seed inside it is only ever
written encrypted::

    {
      "format": "tallystick-key",
      "version": 1,
      "kind": "account",
      "public": "<52-character lowercase base32 public key>",
      "kdf": {"name": "argon2id", "opslimit": 2, "memlimit": 67108864, "salt": "<base64>"},
      "box": "<base64 of a SecretBox message: 24-byte nonce || ciphertext of the seed>"
    }

The box key is derived from the passphrase with Argon2id (``nacl.pwhash.argon2id.kdf``,
the file's salt and limits), then bound to the file's ``kind`` with keyed BLAKE2b::

    box_key = BLAKE2b-256(key=argon2id(passphrase, salt), data=b"tallystick-key/1/" + kind)

so a file whose ``kind`` was edited does not open (a SecretBox has no associated data).
The public key is checked against the decrypted seed instead, so an edited public key
is reported as such. The passphrase is used as its UTF-8 bytes after Unicode NFC
normalisation, so the same passphrase typed on different systems opens the file.

The recovery phrase of the account key is the BIP-39 English encoding of its seed:
the 32-byte seed *is* the 256-bit entropy, so phrase and seed convert exactly, both
ways, and the phrase has 24 words.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import getpass
import hashlib
import json
import os
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import nacl.utils
from mnemonic import Mnemonic
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from wallet.encoding import key_from_text, key_text, short
from wallet.errors import BadPhrase, EncodingError, KeyFileError

FORMAT = "tallystick-key"
"""The ``format`` field of every key file."""

FORMAT_VERSION = 1
"""The key file version this build writes and reads."""

KINDS = ("issuer", "account", "device", "witness", "node")
"""The kinds of key a key file may hold."""

SEED_BYTES = 32
"""Length of an Ed25519 seed, and of the BIP-39 entropy of a 24-word phrase."""

PHRASE_WORDS = 24
"""Number of words in a recovery phrase (256 bits of entropy + 8 checksum bits)."""

OPSLIMIT_CEILING = 16
"""The highest Argon2id opslimit a key file may ask for (SENSITIVE is 4)."""

MEMLIMIT_CEILING = 1 << 30
"""The most memory (1 GiB) a key file may make us allocate to derive its key."""

KEY_FILE_BYTES_MAX = 64 * 1024
"""A key file is a few hundred bytes; anything over this is refused unread."""

PASSPHRASE_ENV = "TALLY_PASSPHRASE"
"""Environment variable holding the passphrase itself."""

PASSPHRASE_FILE_ENV = "TALLY_PASSPHRASE_FILE"
"""Environment variable naming a file whose content is the passphrase."""

_SALT_BYTES = argon2id.SALTBYTES
_BOX_BYTES = SecretBox.NONCE_SIZE + SEED_BYTES + SecretBox.MACBYTES
_CONTEXT = b"tallystick-key/1/"
_NAMES_A_KEY = re.compile(rf"(?:the )?({'|'.join(KINDS)}) key(?: file)?", re.IGNORECASE)
"""A ``source`` that only names a key (``the device key``), not where it is kept."""


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Argon2id cost parameters: ``opslimit`` passes over ``memlimit`` bytes of memory."""

    opslimit: int
    memlimit: int


INTERACTIVE = KdfLimits(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
"""libsodium's interactive limits (2 passes, 64 MiB; ~0.1 s): the default."""

SENSITIVE = KdfLimits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
"""The stronger limits offered on request: libsodium's MODERATE (3 passes, 256 MiB).

libsodium's own SENSITIVE limits (4 passes, 1 GiB) take about 5 s per unlock on a
two-core machine and need 1 GiB free, too much for a phone or a till; MODERATE takes
under a second.
"""

FAST_INSECURE = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
"""The cheapest limits libsodium allows (1 pass, 8 KiB). For tests only: a file
written with these is cheap to brute-force."""

FAST_KDF_ENV = "TALLY_INSECURE_FAST_KDF"
"""Set to ``1`` (by tests only) to write new key files with ``FAST_INSECURE``."""


def kdf_limits() -> KdfLimits:
    """The limits new key files are written with: interactive, or minimal ones only
    when tests set ``TALLY_INSECURE_FAST_KDF=1``."""
    if os.environ.get(FAST_KDF_ENV) == "1":
        return FAST_INSECURE
    return INTERACTIVE


def _limits_problem(opslimit: Any, memlimit: Any) -> str | None:
    """Why these KDF limits are refused, or None when they are within sane bounds."""
    for name, value in (("opslimit", opslimit), ("memlimit", memlimit)):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} {value!r} is not an integer"
    if not argon2id.OPSLIMIT_MIN <= opslimit <= OPSLIMIT_CEILING:
        return f"opslimit {opslimit} is outside {argon2id.OPSLIMIT_MIN}..{OPSLIMIT_CEILING}"
    if not argon2id.MEMLIMIT_MIN <= memlimit <= MEMLIMIT_CEILING:
        return (
            f"memlimit {memlimit} bytes is outside {argon2id.MEMLIMIT_MIN}..{MEMLIMIT_CEILING}"
            " (1 GiB)"
        )
    return None


def _passphrase_bytes(passphrase: str) -> bytes:
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _box_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int, kind: str) -> bytes:
    stretched = argon2id.kdf(
        SecretBox.KEY_SIZE,
        _passphrase_bytes(passphrase),
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )
    return hashlib.blake2b(
        _CONTEXT + kind.encode(), key=stretched, digest_size=SecretBox.KEY_SIZE
    ).digest()


def encrypt_secret(
    seed: bytes, passphrase: str, *, kind: str, limits: KdfLimits = INTERACTIVE
) -> bytes:
    """Encrypt a 32-byte Ed25519 seed under ``passphrase``: a key file's bytes (UTF-8 JSON).

    Raises ``ValueError`` for a seed that is not 32 bytes, an unknown ``kind`` or limits
    ``decrypt_secret`` would refuse, and ``KeyFileError`` for an empty passphrase.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}; expected one of {', '.join(KINDS)}")
    problem = _limits_problem(limits.opslimit, limits.memlimit)
    if problem:
        raise ValueError(f"KDF limits refused: {problem}")
    if not passphrase:
        raise KeyFileError(f"refusing to encrypt the {kind} key with an empty passphrase")
    salt = nacl.utils.random(_SALT_BYTES)
    box_key = _box_key(passphrase, salt, limits.opslimit, limits.memlimit, kind)
    box = SecretBox(box_key).encrypt(bytes(seed))
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "public": key_text(bytes(SigningKey(bytes(seed)).verify_key)),
        "kdf": {
            "name": "argon2id",
            "opslimit": limits.opslimit,
            "memlimit": limits.memlimit,
            "salt": base64.b64encode(salt).decode(),
        },
        "box": base64.b64encode(bytes(box)).decode(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class _KeyDoc:
    kind: str
    public: bytes
    opslimit: int
    memlimit: int
    salt: bytes
    box: bytes


def _b64(value: Any, name: str, size: int, where: str) -> bytes:
    if not isinstance(value, str):
        raise KeyFileError(f"{where}: field {name!r} is missing or not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{where}: field {name!r} is not base64") from exc
    if len(raw) != size:
        raise KeyFileError(f"{where}: field {name!r} is {len(raw)} bytes, expected {size}")
    return raw


def _parse_doc(data: bytes, source: str | os.PathLike[str] | None) -> _KeyDoc:
    """Check a key file's structure and KDF limits without touching the passphrase."""
    if source is None or not os.fspath(source):
        where = "key file"
    elif _NAMES_A_KEY.fullmatch(os.fspath(source).strip()):
        where = os.fspath(source).strip()
    else:
        where = f"key file {os.fspath(source)}"
    if len(data) > KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"{where}: not a Tallystick key file ({len(data)} bytes is too large)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{where}: not a Tallystick key file (not JSON)") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileError(f'{where}: not a Tallystick key file (no "format": "{FORMAT}")')
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise KeyFileError(
            f"{where}: unknown key file version {version!r} (this build reads version "
            f"{FORMAT_VERSION}; a newer Tallystick may read it)"
        )
    kind = doc.get("kind")
    if kind not in KINDS:
        raise KeyFileError(
            f"{where}: unknown key kind {kind!r} (expected one of {', '.join(KINDS)})"
        )
    public_text = doc.get("public")
    if not isinstance(public_text, str):
        raise KeyFileError(f"{where}: field 'public' is missing or not a string")
    try:
        public = key_from_text(public_text, "public key")
    except EncodingError as exc:
        raise KeyFileError(f"{where}: {exc}") from exc
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise KeyFileError(f"{where}: unsupported KDF (this build reads argon2id only)")
    opslimit, memlimit = kdf.get("opslimit"), kdf.get("memlimit")
    problem = _limits_problem(opslimit, memlimit)
    if problem:
        raise KeyFileError(f"{where}: refusing its KDF limits: {problem}")
    salt = _b64(kdf.get("salt"), "kdf.salt", _SALT_BYTES, where)
    box = _b64(doc.get("box"), "box", _BOX_BYTES, where)
    return _KeyDoc(kind, public, opslimit, memlimit, salt, box)


def decrypt_secret(
    data: bytes, passphrase: str, *, source: str | os.PathLike[str] | None = None
) -> tuple[str, SigningKey]:
    """Open a key file's bytes with ``passphrase``: its kind and its signing key.

    ``source`` is where the key is kept, for error messages only: a path (``wrong
    passphrase for the device key in /x/d.key``), or nothing (``wrong passphrase for the
    device key``). Raises ``KeyFileError`` for bytes that are not a key file, an unknown
    version, KDF limits outside sane bounds (checked before any memory is allocated), a
    wrong passphrase (or an edited file), and a public key that does not belong to the
    decrypted seed.
    """
    doc = _parse_doc(data, source)
    return doc.kind, _open(doc, passphrase, source)


def _subject(kind: str, source: str | os.PathLike[str] | None) -> str:
    """How an error names the key: ``the device key``, ``the witness key in /etc/w.key``.

    ``source`` is where the key is kept (a path, usually). A source that only names the
    key again (``"the device key"``) adds nothing and is not repeated.
    """
    text = os.fspath(source) if source is not None else ""
    if not text:
        return f"the {kind} key"
    named = _NAMES_A_KEY.fullmatch(text.strip())
    if named:
        return f"the {named.group(1).lower()} key"
    return f"the {kind} key in {text}"


def _open(doc: _KeyDoc, passphrase: str, source: str | os.PathLike[str] | None) -> SigningKey:
    subject = _subject(doc.kind, source)
    box_key = _box_key(passphrase, doc.salt, doc.opslimit, doc.memlimit, doc.kind)
    try:
        seed = SecretBox(box_key).decrypt(doc.box)
    except CryptoError as exc:
        raise KeyFileError(
            f"wrong passphrase for {subject} (or the key file is damaged: if the passphrase "
            "is right, restore the key from a backup)"
        ) from exc
    key = SigningKey(seed)
    actual = bytes(key.verify_key)
    if actual != doc.public:
        raise KeyFileError(
            f"{subject} names public key {short(doc.public)}…, but its encrypted seed "
            f"belongs to {short(actual)}…: the key file was altered or mixed up; restore "
            "it from a backup"
        )
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory; the rename is still atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write a key file's bytes to ``path`` atomically, mode 0600: whole or not at all.

    The bytes go to a temporary file in the same directory (created 0600), which is
    flushed and fsynced, then moved into place and the directory fsynced, so a crash
    or a full disk leaves either no file or the old one, never a torn or half-written
    key. Without ``replace`` an existing file is never overwritten: the temporary file
    is hard-linked into place, which fails if a file appeared meanwhile (on file
    systems without hard links it falls back to ``os.replace`` after checking). With
    ``replace`` it is renamed over the target (a key exported again, say).

    Every key file the project writes goes through here. Raises ``KeyFileError`` for an
    existing file (without ``replace``), a missing directory, or a failed write.
    """
    path = Path(path)
    if not replace and (path.exists() or path.is_symlink()):
        raise KeyFileError(f"refusing to overwrite the existing key file {path}")
    if not path.parent.is_dir():
        raise KeyFileError(f"cannot write key file {path}: directory {path.parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                        dir=path.parent)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise KeyFileError(f"refusing to overwrite the existing key file {path}") from exc
            except OSError:
                if path.exists() or path.is_symlink():
                    raise KeyFileError(
                        f"refusing to overwrite the existing key file {path}") from None
                os.replace(tmp, path)
    except KeyFileError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def save_key(
    path: Path,
    key: SigningKey,
    passphrase: str,
    *,
    kind: str,
    limits: KdfLimits = INTERACTIVE,
) -> None:
    """Write ``key`` encrypted to a new file at ``path``, mode 0600, atomically.

    See ``write_key_file``: the file appears whole or not at all, and an existing file
    (or one that appears meanwhile) is never overwritten. Raises ``KeyFileError`` if
    ``path`` already exists or its directory does not.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise KeyFileError(f"refusing to overwrite the existing key file {path}")
    if not path.parent.is_dir():
        raise KeyFileError(f"cannot write key file {path}: directory {path.parent} does not exist")
    write_key_file(path, encrypt_secret(bytes(key), passphrase, kind=kind, limits=limits))


def _read(path: Path) -> bytes:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return f.read(KEY_FILE_BYTES_MAX + 1)
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file at {path}") from exc
    except IsADirectoryError as exc:
        raise KeyFileError(f"{path} is a directory, not a key file") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc


def load_key(path: Path, passphrase: str, *, kind: str | None = None) -> SigningKey:
    """Read and decrypt the key file at ``path``.

    With ``kind`` given, also refuse (before deriving any key) a file holding another
    kind of key. Raises ``KeyFileError`` as ``decrypt_secret`` does, and for a missing or
    unreadable file.
    """
    doc = _parse_doc(_read(path), str(path))
    if kind is not None and doc.kind != kind:
        raise KeyFileError(f"{path} holds a {doc.kind} key, not the {kind} key")
    return _open(doc, passphrase, str(path))


def read_key_info(path: Path) -> tuple[str, bytes]:
    """The kind and public key a key file declares, read without the passphrase.

    Nothing is decrypted, so the public key is as the file states it; ``load_key``
    checks it against the seed.
    """
    doc = _parse_doc(_read(path), str(path))
    return doc.kind, doc.public


_MNEMONIC = Mnemonic("english")


def phrase_from_seed(seed: bytes) -> str:
    """The 24-word BIP-39 English recovery phrase whose entropy is this 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
    return _MNEMONIC.to_mnemonic(bytes(seed))


def _suggest(word: str) -> list[str]:
    """A few list words close to a misspelt one: same 4-letter start, or similar."""
    words = _MNEMONIC.wordlist
    out = [w for w in words if len(word) >= 3 and w.startswith(word[:4])]
    for w in difflib.get_close_matches(word, words, n=3, cutoff=0.75):
        if w not in out:
            out.append(w)
    return out[:3]


def seed_from_phrase(phrase: str) -> bytes:
    """The 32-byte seed a 24-word recovery phrase encodes.

    Case, extra spaces and line breaks do not matter. Raises ``BadPhrase`` saying what
    is wrong: the word count, each unknown word (with its position and close words),
    or a failed checksum (a mistyped or misordered word).
    """
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) != PHRASE_WORDS:
        raise BadPhrase(f"a recovery phrase has {PHRASE_WORDS} words, this one has {len(words)}")
    known = set(_MNEMONIC.wordlist)
    problems = []
    for pos, word in enumerate(words, start=1):
        if word not in known:
            hint = _suggest(word)
            also = f" (did you mean {' or '.join(repr(w) for w in hint)}?)" if hint else ""
            problems.append(f"word {pos}, {word!r}, is not a BIP-39 English word{also}")
    if problems:
        raise BadPhrase("; ".join(problems))
    try:
        entropy = _MNEMONIC.to_entropy(words)
    except ValueError as exc:
        raise BadPhrase(
            "checksum failed: every word is valid, but one is wrong or two are in the wrong "
            "order; compare each word with your written copy"
        ) from exc
    return bytes(entropy)


def passphrase_from_env(prompt: str = "Passphrase: ") -> str:
    """The key passphrase: from ``TALLY_PASSPHRASE``, else the file named by
    ``TALLY_PASSPHRASE_FILE`` (one trailing newline stripped), else asked for on the
    terminal if stdin is one.

    An empty variable counts as unset. Raises ``KeyFileError`` when there is no
    passphrase to be had, or the passphrase file cannot be read or is empty.
    """
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    file_name = os.environ.get(PASSPHRASE_FILE_ENV)
    if file_name:
        try:
            text = Path(file_name).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(
                f"cannot read the passphrase file {file_name} ({PASSPHRASE_FILE_ENV}): {exc}"
            ) from exc
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            raise KeyFileError(f"the passphrase file {file_name} ({PASSPHRASE_FILE_ENV}) is empty")
        return text
    if sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(prompt)
        if not value:
            raise KeyFileError("no passphrase: an empty passphrase was entered")
        return value
    raise KeyFileError(f"no passphrase: set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}")


__all__ = [
    "FAST_INSECURE",
    "FORMAT",
    "FORMAT_VERSION",
    "INTERACTIVE",
    "KINDS",
    "SENSITIVE",
    "KdfLimits",
    "decrypt_secret",
    "encrypt_secret",
    "load_key",
    "passphrase_from_env",
    "phrase_from_seed",
    "read_key_info",
    "save_key",
    "seed_from_phrase",
    "write_key_file",
]
