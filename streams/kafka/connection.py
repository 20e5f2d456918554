"""How every client of the project connects to Kafka: address, TLS and SASL, in one place.

A :class:`KafkaConnection` holds the bootstrap servers and the connection properties,
named as Kafka's own clients name them (``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``,
``ssl.key.location``, ...). They come from, later ones winning:

1. a client.properties file (``--kafka-config FILE`` / ``KAFKA_CONFIG_FILE``);
2. the environment (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_PASSWORD``, ...);
3. the CLI's flags (never secrets: passwords come from the environment or a file).

Each client library gets them in its own spelling: :meth:`librdkafka_config` for the
confluent-kafka clients (CLI, bench, tests), :meth:`aiokafka_kwargs` for the runner's and
the handler feed's aiokafka clients, :meth:`faust_credentials` for the worker's Faust app.
:meth:`describe` shows them with every secret masked.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
MASK = "********"

# Our own property (librdkafka and Java have no equivalent): a Python callable
# "module:function" returning (token, expiry in epoch seconds), for OAUTHBEARER tokens that
# come from code, such as Amazon MSK's IAM tokens (streams.kafka.msk_iam:token).
TOKEN_PROVIDER = "signalbox.oauthbearer.token.provider"
OIDC_KEYS = ("sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.token.endpoint.url")

# Java-only properties of a client.properties file that librdkafka would refuse; dropped.
JAVA_ONLY = re.compile(r"^(client\.dns\.lookup|schema\.registry\..*|basic\.auth\..*|"
                       r"sasl\.login\..*|sasl\.client\.callback\.handler\.class|sasl\.login\.callback\.handler\.class|"
                       r"ssl\.endpoint\.identification\.algorithm\.disable|key\.serializer|value\.serializer|"
                       r"key\.deserializer|value\.deserializer)$")
KEYSTORES = re.compile(r"^ssl\.(truststore|keystore)\.")
_SECRET = re.compile(r"password|secret|jaas|\.pem$|token", re.IGNORECASE)


from streams.settings import ConnectionConfigError  # noqa: E402  (defined with the settings it checks)


def connection_env_names() -> set[str]:
    """The environment variables of the connection settings (Settings' aliases), upper case."""
    from streams.settings import Settings

    names = set()
    for name in ("kafka_config", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                 "sasl_password_file", "ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
                 "ssl_key_password"):
        alias = Settings.model_fields[name].validation_alias
        names.update(str(choice).upper() for choice in getattr(alias, "choices", []))
    return names


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key)) and key != TOKEN_PROVIDER


def load_properties(path: Path) -> dict[str, str]:
    """A Java .properties file: ``key=value`` (or ``key: value``, ``key value``) per line,
    ``#``/``!`` comments, a trailing backslash continues the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConnectionConfigError(f"cannot read the Kafka client config {path}: {exc.strerror or exc}") from None
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        match = re.match(r"^((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)$", logical)
        key, value = (match.group(1), match.group(2)) if match else (logical, "")
        props[key.replace("\\", "")] = value.strip()
        logical = ""
    return props


def _jaas_credentials(jaas: str) -> tuple[str, dict[str, str]]:
    """The login module and options of a Java ``sasl.jaas.config`` value."""
    module = jaas.split(None, 1)[0] if jaas.split() else ""
    options = dict(re.findall(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', jaas))
    return module.rsplit(".", 1)[-1], options


def normalise(props: Mapping[str, str]) -> dict[str, str]:
    """Kafka (Java) and librdkafka spellings folded into one: ``sasl.mechanisms`` ->
    ``sasl.mechanism``, ``sasl.jaas.config``'s username and password -> ``sasl.username`` /
    ``sasl.password``; Java-only properties dropped (keystores refused)."""
    out: dict[str, str] = {}
    for key, value in props.items():
        key = key.strip()
        if key == "sasl.mechanisms":
            key = "sasl.mechanism"
        if KEYSTORES.match(key):
            raise ConnectionConfigError(
                f"{key}: Java keystores are not read here; give PEM files instead: ssl.ca.location (the CA), "
                "ssl.certificate.location and ssl.key.location (a client certificate)")
        if key == "sasl.jaas.config":
            module, options = _jaas_credentials(value)
            if module in ("PlainLoginModule", "ScramLoginModule"):
                out.setdefault("sasl.username", options.get("username", ""))
                out.setdefault("sasl.password", options.get("password", ""))
            elif module not in ("OAuthBearerLoginModule", "IAMLoginModule"):
                raise ConnectionConfigError(f"sasl.jaas.config: login module {module!r} is not supported")
            continue
        if JAVA_ONLY.match(key):
            log.info("kafka config: %s is a Java client property; ignored", key)
            continue
        out[key] = value.strip()
    return out


def _check_file(key: str, value: str | None) -> None:
    if value and not Path(value).is_file():
        raise ConnectionConfigError(f"{key}: no such file {value}")


@dataclass(frozen=True)
class KafkaConnection:
    """The bootstrap servers and the connection properties (Kafka's names), validated."""

    bootstrap_servers: str
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        props = dict(normalise(self.properties))
        props.pop("bootstrap.servers", None)
        protocol = props.get("security.protocol", "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ConnectionConfigError(f"security.protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        props["security.protocol"] = protocol
        mechanism = props.get("sasl.mechanism", "").upper()
        if protocol.startswith("SASL_"):
            mechanism = mechanism or "PLAIN"  # librdkafka's and Java's default
            if mechanism not in MECHANISMS:
                raise ConnectionConfigError(f"sasl.mechanism {mechanism!r}: expected one of {', '.join(MECHANISMS)}")
            props["sasl.mechanism"] = mechanism
            if mechanism == "OAUTHBEARER":
                oidc = props.get("sasl.oauthbearer.method", "default").lower() == "oidc"
                if oidc and not all(props.get(k) for k in OIDC_KEYS):
                    raise ConnectionConfigError(f"sasl.oauthbearer.method=oidc needs {', '.join(OIDC_KEYS)}")
                if not oidc and not props.get(TOKEN_PROVIDER):
                    raise ConnectionConfigError(
                        "OAUTHBEARER needs sasl.oauthbearer.method=oidc (with a client id, secret and token "
                        f"endpoint) or {TOKEN_PROVIDER}=module:function (e.g. streams.kafka.msk_iam:token)")
            elif not props.get("sasl.username") or not props.get("sasl.password"):
                raise ConnectionConfigError(f"SASL {mechanism} needs sasl.username and sasl.password "
                                            "(the password from KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE "
                                            "or the --kafka-config file)")
        elif mechanism or props.get("sasl.username"):
            raise ConnectionConfigError(f"SASL settings given but security.protocol is {protocol}: "
                                        "use SASL_SSL (or SASL_PLAINTEXT)")
        elif any(k.startswith("ssl.") and v for k, v in props.items()) and protocol == "PLAINTEXT":
            raise ConnectionConfigError("TLS settings (ssl.*) given but security.protocol is PLAINTEXT: use SSL "
                                        "(or SASL_SSL)")
        if bool(props.get("ssl.certificate.location")) != bool(props.get("ssl.key.location")):
            raise ConnectionConfigError("a client certificate needs both ssl.certificate.location and "
                                        "ssl.key.location")
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            _check_file(key, props.get(key))
        object.__setattr__(self, "properties", props)

    # -- where the settings come from ------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The file (settings.kafka_config) under the environment and flags (the other fields)."""
        props: dict[str, str] = {}
        if settings.kafka_config is not None:
            props.update(normalise(load_properties(settings.kafka_config)))
        bootstrap = settings.bootstrap_servers
        from_file = props.pop("bootstrap.servers", None)
        if from_file and "bootstrap_servers" not in settings.model_fields_set:
            bootstrap = from_file
        for key, value in settings.kafka_properties().items():
            if value:
                props[key] = value
        return cls(bootstrap, props)

    # -- what each property says -----------------------------------------------------

    @property
    def protocol(self) -> str:
        return self.properties["security.protocol"]

    @property
    def mechanism(self) -> str | None:
        return self.properties.get("sasl.mechanism") if self.uses_sasl else None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def plaintext(self) -> bool:
        return self.protocol == "PLAINTEXT"

    def who(self) -> str:
        """How we authenticate, for error messages (no secret)."""
        if not self.uses_sasl:
            cert = self.properties.get("ssl.certificate.location")
            return f"client certificate {cert}" if cert else "no authentication"
        user = self.properties.get("sasl.username") or self.properties.get("sasl.oauthbearer.client.id")
        return f"SASL {self.mechanism}" + (f" as {user!r}" if user else "")

    def describe(self) -> list[str]:
        """``key = value`` lines, secrets masked (for ``signalbox topics check``)."""
        lines = [f"bootstrap.servers = {self.bootstrap_servers}"]
        for key in sorted(self.properties):
            value = self.properties[key]
            lines.append(f"{key} = {MASK if is_secret(key) and value else value}")
        return lines

    # -- librdkafka (confluent-kafka) ------------------------------------------------

    def librdkafka_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for key, value in self.properties.items():
            if not key.startswith("signalbox."):
                config[key] = value
        provider = self.properties.get(TOKEN_PROVIDER)
        if self.mechanism == "OAUTHBEARER" and provider:
            fetch = load_token_function(provider)
            config["oauth_cb"] = lambda _config_str: fetch()
        return config

    # -- aiokafka (runner, handler feed) and Faust (the worker) ----------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the aiokafka clients (None without TLS)."""
        if not self.uses_tls:
            return None
        p = self.properties
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=p.get("ssl.ca.location") or None)
            if p.get("ssl.certificate.location"):
                context.load_cert_chain(p["ssl.certificate.location"], p.get("ssl.key.location"),
                                        p.get("ssl.key.password") or None)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f"{k}={v}" for k, v in p.items() if k.endswith(".location"))
            raise ConnectionConfigError(f"cannot load the TLS files ({files}): {exc}") from None
        if p.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
            context.check_hostname = False
        return context

    def token_provider(self) -> Any:
        """aiokafka's AbstractTokenProvider for OAUTHBEARER (None for other mechanisms)."""
        if self.mechanism != "OAUTHBEARER":
            return None
        provider = self.properties.get(TOKEN_PROVIDER)
        if provider:
            return FunctionTokenProvider(load_token_function(provider))
        p = self.properties
        return OidcTokenProvider(p["sasl.oauthbearer.token.endpoint.url"], p["sasl.oauthbearer.client.id"],
                                 p["sasl.oauthbearer.client.secret"], p.get("sasl.oauthbearer.scope", ""))

    def aiokafka_auth(self) -> dict[str, Any]:
        """aiokafka's security keyword arguments (as Faust's credentials_to_aiokafka_auth)."""
        auth: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            auth["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            auth["sasl_mechanism"] = self.mechanism
            if self.mechanism == "OAUTHBEARER":
                auth["sasl_oauth_token_provider"] = self.token_provider()
            else:
                auth["sasl_plain_username"] = self.properties["sasl.username"]
                auth["sasl_plain_password"] = self.properties["sasl.password"]
        return auth

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """``bootstrap_servers`` and the security arguments of an AIOKafkaConsumer/Producer."""
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        return {"bootstrap_servers": servers, **self.aiokafka_auth()}

    def faust_broker(self, scheme: str = "kafka") -> str:
        """Faust's broker URL (``kafka://h1:9092;h2:9092``)."""
        return f"{scheme}://" + ";".join(s.strip() for s in self.bootstrap_servers.split(",") if s.strip())

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        if self.plaintext:
            return None
        context = self.ssl_context()
        if not self.uses_sasl:
            return faust.SSLCredentials(context)
        if self.mechanism == "OAUTHBEARER":
            return faust.OAuthCredentials(oauth_cb=self.token_provider(), ssl_context=context)
        return faust.SASLCredentials(username=self.properties["sasl.username"],
                                     password=self.properties["sasl.password"], ssl_context=context,
                                     mechanism=self.mechanism)


# -- OAUTHBEARER tokens for aiokafka ---------------------------------------------------


def load_token_function(spec: str) -> Callable[[], tuple[str, float]]:
    """``module:function``: a callable returning (token, expiry in epoch seconds)."""
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConnectionConfigError(f"{TOKEN_PROVIDER}={spec}: cannot load it ({exc})") from None
    if not callable(function):
        raise ConnectionConfigError(f"{TOKEN_PROVIDER}={spec} is not a function")
    return function  # type: ignore[no-any-return]


def _base_provider() -> type:
    from aiokafka.abc import AbstractTokenProvider

    return AbstractTokenProvider


class _CachedToken:
    """A token reused until a minute before it expires."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self, fetch: Callable[[], Any]) -> str:
        async with self._lock:
            if self._token is None or time.time() > self._expires - 60:
                self._token, self._expires = await fetch()
            return self._token


class FunctionTokenProvider(_base_provider()):  # type: ignore[misc]
    """Tokens from a synchronous function (run in a thread), cached until near expiry."""

    def __init__(self, function: Callable[[], tuple[str, float]]) -> None:
        self.function = function
        self._cache = _CachedToken()

    async def token(self) -> str:
        async def fetch() -> tuple[str, float]:
            token, expiry = await asyncio.get_running_loop().run_in_executor(None, self.function)
            return str(token), float(expiry)

        return await self._cache.get(fetch)


class OidcTokenProvider(_base_provider()):  # type: ignore[misc]
    """OAuth 2 client credentials grant, as librdkafka's ``sasl.oauthbearer.method=oidc``."""

    def __init__(self, endpoint: str, client_id: str, client_secret: str, scope: str = "") -> None:
        self.endpoint, self.client_id, self._secret, self.scope = endpoint, client_id, client_secret, scope
        self._cache = _CachedToken()

    def __repr__(self) -> str:
        return f"<OidcTokenProvider {self.endpoint} client_id={self.client_id}>"

    async def token(self) -> str:
        import aiohttp

        async def fetch() -> tuple[str, float]:
            data = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
            auth = aiohttp.BasicAuth(self.client_id, self._secret)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.post(self.endpoint, data=data, auth=auth) as response:
                if response.status != 200:
                    raise ConnectionError(f"token endpoint {self.endpoint} answered HTTP {response.status}")
                body = await response.json(content_type=None)
            return str(body["access_token"]), time.time() + float(body.get("expires_in", 300))

        return await self._cache.get(fetch)


def kafka_of(settings: Settings) -> KafkaConnection:
    """How to connect (bootstrap servers, TLS, SASL): what every Kafka client is given."""
    return KafkaConnection.from_settings(settings)
