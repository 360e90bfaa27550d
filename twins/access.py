"""How checks reach a twin's shell over its network: SSH or WinRM, credentials from env or file.

```yaml
run:
  vm:
    ssh: {user: root, password_env: HMI_ROOT_PASSWORD}           # or password_file, key_file
    # winrm: {user: Administrator, password_file: secrets/hmi.pw, port: 5985}
```

A secret is named, never written in the inventory: ``password_env`` (an environment
variable), ``password_file`` or ``key_file`` (files, relative to the site file). It is
read when a check connects and goes nowhere else: not into the twin's testinfra URL,
a log, an error message or the evidence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import TwinError


class AccessError(TwinError):
    """A credential cannot be read; the message names where it was looked for (exit 2)."""


class _Access(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: str
    user: str = Field(description="the account checks log in as")
    port: int = Field(ge=1, le=65535)
    password_env: str | None = Field(None, description="environment variable with the password")
    password_file: str | None = Field(None, description="file holding the password")
    timeout: float = Field(10.0, gt=0, description="seconds to connect")

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _one_password(self) -> _Access:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        """The password, read now (AccessError naming the variable or file, never the value)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise AccessError(
                    f"{self.protocol} password: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise AccessError(
                    f"{self.protocol} password: cannot read {self.password_file} "
                    f"({exc.strerror or exc})"
                ) from None
        return None

    def url(self, address: str) -> str:
        """The testinfra URL shown for this access (it never holds a secret)."""
        host = f"[{address}]" if ":" in address else address
        return f"{self.protocol}://{self.user}@{host}:{self.port}"

    def resolved(self, base: Path) -> _Access:
        """A copy with its files resolved against ``base`` (the site file's folder)."""
        update = {
            key: str((base / value).resolve())
            for key in ("password_file", "key_file")
            if (value := getattr(self, key, None)) and not Path(value).is_absolute()
        }
        return self.model_copy(update=update)


class SshAccess(_Access):
    """SSH (paramiko): a password and/or a private key file."""

    protocol: Literal["ssh"] = "ssh"
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    key_file: str | None = Field(None, description="private key file (OpenSSH or PEM)")

    @model_validator(mode="after")
    def _some_secret(self) -> SshAccess:
        if not (self.password_env or self.password_file or self.key_file):
            raise ValueError("name a secret: password_env, password_file or key_file")
        return self


class WinrmAccess(_Access):
    """WinRM (pywinrm), NTLM over HTTP (5985) or HTTPS (5986)."""

    protocol: Literal["winrm"] = "winrm"
    user: str = "Administrator"
    port: int = Field(5985, ge=1, le=65535)
    https: bool = Field(False, description="WinRM over HTTPS (port 5986 usually)")
    verify_tls: bool = Field(
        False, description="check the server's certificate (a restored twin's is its own)"
    )

    @model_validator(mode="after")
    def _some_secret(self) -> WinrmAccess:
        if not (self.password_env or self.password_file):
            raise ValueError("name a secret: password_env or password_file")
        return self


Access = SshAccess | WinrmAccess
