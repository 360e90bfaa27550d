"""The site's signing key (ed25519) and DSSE signatures.

A key pair is two PEM files, the private key (PKCS#8, mode 0600) and ``<name>.pub``
(SubjectPublicKeyInfo), which OpenSSL reads as they are. A key's id is the SHA-256 of
its public key's DER encoding (``openssl pkey -pubin -outform DER | sha256sum``).

Everything is signed as DSSE does it: the signature covers the pre-authentication
encoding ``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body``, so
``openssl pkeyutl -verify -rawin`` on those bytes checks it without this code.

The private key's path comes from ``$RESTOREDRILL_SIGNING_KEY`` or the site file's
``signing_key:``; it is never stored in the evidence.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .evidence_errors import EvidenceError

ENV = "RESTOREDRILL_SIGNING_KEY"


class SigningError(EvidenceError):
    """A signing key cannot be made, read or used; the message names the file and why."""


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``body``: what a signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict base64: only the one encoding of the bytes is accepted (a changed padding
    bit or character never decodes to the same bytes)."""
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if b64(data) != text:
        raise ValueError("not canonical base64")  # as b64decode's own error (binascii.Error)
    return data


@dataclass(frozen=True)
class PublicKey:
    """A verifying key and its id."""

    key: Ed25519PublicKey

    @property
    def der(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def keyid(self) -> str:
        """SHA-256 of the DER public key, hex."""
        return hashlib.sha256(self.der).hexdigest()

    def verify(self, payload_type: str, body: bytes, signature: bytes) -> bool:
        try:
            self.key.verify(signature, pae(payload_type, body))
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_pem(cls, text: str | bytes, where: str = "public key") -> PublicKey:
        data = text.encode("ascii", "replace") if isinstance(text, str) else text
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"{where}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"{where}: not an ed25519 key ({type(key).__name__})")
        return cls(key)


@dataclass(frozen=True)
class Signer:
    """The site's private key, read from ``path``."""

    key: Ed25519PrivateKey
    path: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, payload_type: str, body: bytes) -> bytes:
        return self.key.sign(pae(payload_type, body))


def fingerprint(keyid: str) -> str:
    """A key id as people compare it: ``SHA256:ab12 cd34 …`` (the first 128 bits)."""
    return "SHA256:" + " ".join(keyid[i : i + 4] for i in range(0, 32, 4))


# --------------------------------------------------------------------------- files


def public_path(private: Path) -> Path:
    """``site.key`` -> ``site.pub``; any other name gets ``.pub`` appended."""
    return private.with_suffix(".pub") if private.suffix == ".key" else Path(f"{private}.pub")


def keygen(path: Path, *, force: bool = False) -> Signer:
    """Write a new key pair: ``path`` (private, 0600) and its public key beside it."""
    pub = public_path(path)
    for target in (path, pub):
        if target.exists() and not force:
            raise SigningError(
                f"{target} exists: a signing key is never overwritten (give another path, "
                "or --force to replace it; the chain then needs `evidence rotate`)"
            )
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        pub.write_text(PublicKey(key.public_key()).pem)
    except OSError as exc:
        raise SigningError(f"cannot write the key pair {path}: {exc.strerror or exc}") from None
    return Signer(key, str(path))


def load_signer(path: str | Path, origin: str = "") -> Signer:
    """Read a private key file; SigningError names it and what is wrong."""
    path = Path(path)
    where = f"signing key {path}" + (f" ({origin})" if origin else "")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(
            f"{where}: cannot read it: {exc.strerror or exc}; make one with "
            f"`restoredrill evidence keygen -o {path}`, or correct the path"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(
            f"{where}: it is encrypted; restoredrill needs an unencrypted key file (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " (that is a public key: give the private one)" if b"PUBLIC KEY" in data else ""
        raise SigningError(f"{where}: not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where}: not an ed25519 key ({type(key).__name__})")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o077:
        import logging

        logging.getLogger(__name__).warning(
            "%s: others may read it (mode %o): chmod 600 %s", where, mode, path
        )
    return Signer(key, str(path))


def load_public(path: str | Path) -> PublicKey:
    """Read a public key file (or take a private one's public half)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"public key {path}: cannot read it: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        return load_signer(path).public
    return PublicKey.from_pem(data, f"public key {path}")


def configured(site_key: str | Path | None = None, base_dir: Path | None = None) -> Signer | None:
    """The signer in effect: ``$RESTOREDRILL_SIGNING_KEY``, else the site's ``signing_key``
    (relative to the site file's directory), else None."""
    if os.environ.get(ENV):
        return load_signer(os.environ[ENV], f"${ENV}")
    if site_key:
        path = Path(site_key).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return load_signer(path, "signing_key in the site file")
    return None


def for_site(loaded: object) -> Signer | None:
    """The signer of a loaded site (``LoadedSite``)."""
    site = loaded.site  # type: ignore[attr-defined]
    return configured(getattr(site, "signing_key", None), loaded.base_dir)  # type: ignore[attr-defined]
