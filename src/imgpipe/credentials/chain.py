"""Certificate chains for development and trial deployments (never for production).

A chain is a CA that signs one leaf; the leaf carries what C2PA validators
require of a signing certificate: the ``emailProtection`` extended key usage,
``digitalSignature`` key usage, and an authority key identifier. The names say
plainly that the chain is for development or trial use, so a reader that shows
the signer shows that too.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["ed25519", "es256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

CHAIN_FILE = "chain.pem"
KEY_FILE = "signer-key.pem"
CA_FILE = "ca.pem"


@dataclass(frozen=True)
class ChainFiles:
    """Where a made chain lives: signer chain (leaf first), its private key, the CA."""

    chain: Path
    key: Path
    ca: Path

    @classmethod
    def under(cls, directory: Path) -> ChainFiles:
        return cls(directory / CHAIN_FILE, directory / KEY_FILE, directory / CA_FILE)

    def exist(self) -> bool:
        return self.chain.is_file() and self.key.is_file() and self.ca.is_file()


def _new_key(kind: KeyKind) -> PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _sign_with(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common: str, purpose: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"imgpipe {purpose} (not for production)"),
    ])


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
        crl_sign=not sign, encipher_only=False, decipher_only=False,
    )


def make_chain(directory: Path, *, kind: KeyKind = "ed25519", purpose: str = "development",
               days: int = 825) -> ChainFiles:
    """Write a new CA and signing certificate under ``directory``; return the files.

    The private key file is created readable by its owner only.
    """
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)
    ca_key, leaf_key = _new_key(kind), _new_key(kind)
    ca_name = _name(f"imgpipe {purpose.upper()} CA", purpose)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, _sign_with(ca_key))
    )
    leaf = (
        x509.CertificateBuilder().subject_name(_name(f"imgpipe {purpose.upper()} signer", purpose))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()),
                       critical=False)
        .sign(ca_key, _sign_with(ca_key))
    )
    pem = serialization.Encoding.PEM
    files = ChainFiles.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files.ca.write_bytes(ca.public_bytes(pem))
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    return files


def ensure_chain(directory: Path, *, purpose: str = "development") -> ChainFiles:
    """The chain under ``directory``, made on first use and kept afterwards."""
    files = ChainFiles.under(directory)
    return files if files.exist() else make_chain(directory, purpose=purpose)
