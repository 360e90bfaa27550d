"""How a SCADA twin presents itself to OPC UA clients: the server's BuildInfo, its
application name and URI, and its certificate's subject.

Defaults name restoredrill's twin honestly; a plant gives its server's own (what
``uaclient``/UaExpert show under Server/ServerStatus/BuildInfo and in the endpoint)::

    identity:
      product_uri: http://www.vendor.example/ScadaServer
      manufacturer_name: Vendor AG
      product_name: ScadaServer
      software_version: "7.1.2"
      build_number: "7120"
      application_uri: urn:scada01:Vendor:ScadaServer
      certificate: {organization: Plant Ltd, country: DE}
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from restoredrill import __version__
from restoredrill.errors import InputError

TEXT = Field(None, min_length=1, max_length=512)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CertificateSubject(_Model):
    """The X.509 subject of the server certificate (security basic256sha256)."""

    common_name: str | None = Field(None, min_length=1, max_length=64, description="default: name")
    organization: str = Field("restoredrill", min_length=1, max_length=64)
    organizational_unit: str | None = Field(None, min_length=1, max_length=64)
    locality: str | None = Field(None, min_length=1, max_length=128)
    state: str | None = Field(None, min_length=1, max_length=128)
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="two letters: DE")

    def attributes(self, name: str) -> dict[str, str]:
        """As X.509 attribute names (``commonName`` first)."""
        fields = {
            "commonName": self.common_name or name,
            "organizationName": self.organization,
            "organizationalUnitName": self.organizational_unit,
            "localityName": self.locality,
            "stateOrProvinceName": self.state,
            "countryName": self.country,
        }
        return {k: v for k, v in fields.items() if v}


class OpcuaIdentity(_Model):
    """BuildInfo, application description and certificate subject of an OPC UA server."""

    application_name: str | None = Field(
        None, min_length=1, max_length=512, description="default: the device's name"
    )
    application_uri: str | None = Field(
        None, min_length=1, max_length=512, description="default: urn:restoredrill:NAME"
    )
    product_uri: str = Field("urn:restoredrill:scada-twin", min_length=1, max_length=512)
    manufacturer_name: str = Field("restoredrill", min_length=1, max_length=512)
    product_name: str = Field("restoredrill SCADA twin", min_length=1, max_length=512)
    software_version: str = Field(__version__, min_length=1, max_length=512)
    build_number: str = Field(__version__, min_length=1, max_length=512)
    build_date: datetime | None = Field(None, description="default: when the twin starts")
    certificate: CertificateSubject = Field(default_factory=CertificateSubject)

    def name(self, default: str) -> str:
        return self.application_name or default

    def uri(self, name: str) -> str:
        return self.application_uri or f"urn:restoredrill:{name}"


def parse_identity(pairs: Sequence[str]) -> OpcuaIdentity:
    """``KEY=VALUE`` pairs from a command line (``certificate.country=DE``) as an identity."""
    data: dict[str, Any] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InputError(f"--identity {text!r}: write KEY=VALUE, e.g. product_name=ScadaServer")
        head, _, sub = key.partition(".")
        if sub:
            data.setdefault(head, {})[sub] = value
        else:
            data[key] = value
    try:
        return OpcuaIdentity.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"--identity {where}: {err['msg']}") from None


def identity_args(identity: OpcuaIdentity) -> list[str]:
    """The ``--identity KEY=VALUE`` arguments that give ``identity`` to the emulator."""
    out: list[str] = []
    for key, value in identity.model_dump(exclude_defaults=True, mode="json").items():
        if isinstance(value, dict):
            out += [f"--identity={key}.{k}={v}" for k, v in value.items()]
        else:
            out.append(f"--identity={key}={value}")
    return out
