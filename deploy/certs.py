"""Trial credentials for a Flower deployment: a test CA, a server certificate, SuperNode keys.

What Flower 1.41 expects (read from its source):

* **TLS** -- the SuperLink serves every API over TLS with ``--ssl-ca-certfile ca.crt
  --ssl-certfile server.pem --ssl-keyfile server.key`` (gRPC server credentials without client
  authentication, ``flwr/supercore/grpc.py``); SuperNodes and the ``flwr`` CLI verify it against
  ``ca.crt`` (``--root-certificates``, ``root-certificates`` in ``$FLWR_HOME/config.toml``). The
  server certificate's subjectAltName must name every address clients dial.
* **SuperNode authentication** (CLI-managed, ``flower-superlink --enable-supernode-auth``) --
  each node has an elliptic-curve key on a NIST curve (we use SECP384R1, as Flower's own
  helpers): the private key in OpenSSH format for ``flower-supernode
  --auth-supernode-private-key`` (``load_ssh_private_key``), the public key as an OpenSSH line
  (``ecdsa-sha2-nistp384 AAAA...``) for ``flwr supernode register`` (``load_ssh_public_key``).

This CA is for a local trial only: its key sits next to the certificates and it is valid for a
year. In production the coordinator's certificate comes from the hospital's (or consortium's)
own PKI, and each site generates its node key itself and hands over only the ``.pub`` file.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 365


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Paths of one trial credential set."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # private keys; the public key is ``<key>.pub``

    def node_public(self, i: int) -> Path:
        return self.node_keys[i].with_name(self.node_keys[i].name + ".pub")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clef-fl trial"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(days: int = VALID_DAYS) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("clef-fl trial CA")).issuer_name(_name("clef-fl trial CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, hosts: Sequence[str],
                     days: int = VALID_DAYS) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A TLS server certificate signed by the CA, with a subjectAltName for every host."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_node_key(path: Path) -> Path:
    """A SuperNode key pair: ``path`` (OpenSSH private key, mode 600) and ``path.pub`` (OpenSSH line)."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), private=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(path.with_name(path.name + ".pub"), public + b"\n")
    return path


def create_credentials(out: Path, supernodes: int = 2, hosts: Sequence[str] = DEFAULT_HOSTS,
                       days: int = VALID_DAYS) -> Credentials:
    """Write ``ca.crt``/``ca.key``, ``server.pem``/``server.key`` (SANs: ``hosts`` plus
    127.0.0.1 and localhost) and ``supernode_<i>``/``.pub`` for i in 1..supernodes into ``out``."""
    if supernodes < 0:
        raise ValueError(f"supernodes = {supernodes}: expected >= 0")
    out = Path(out)
    ca_key, ca_cert = make_ca(days)
    server_key, server_cert = make_server_cert(ca_key, ca_cert, [*hosts, *DEFAULT_HOSTS], days)
    pem = serialization.Encoding.PEM
    creds = Credentials(
        ca_cert=_write(out / "ca.crt", ca_cert.public_bytes(pem)),
        ca_key=_write(out / "ca.key", _pem_key(ca_key), private=True),
        server_cert=_write(out / "server.pem", server_cert.public_bytes(pem)),
        server_key=_write(out / "server.key", _pem_key(server_key), private=True),
        node_keys=tuple(make_node_key(out / f"supernode_{i}") for i in range(1, supernodes + 1)),
    )
    return creds
