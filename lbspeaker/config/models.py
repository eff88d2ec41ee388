"""pydantic models of the pool ConfigMap (MetalLB v0.12 schema plus additive extensions).

YAML keys are MetalLB's kebab-case names (aliases); Python attributes are snake_case. The models check
each value on its own (format, type, range); rules that relate several values or several objects live in
``checks.py``. Validation from YAML passes a context (see ``yaml_context``) that resolves community
aliases. Values from ``yamlload`` are typed by the field they land in, as MetalLB's Go decoder did: an
unquoted scalar (``Plain``) keeps its literal text in a string field and is read as a number or boolean
only by a number or boolean field (``plain_int``, ``plain_bool``); a null list item is an object with
every field at its default. Python callers may construct models directly with ordinary values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lbspeaker.config import values
from lbspeaker.config.errors import CUSTOM_ERROR, quote, show
from lbspeaker.config.scalars import plain_bool, plain_int
from lbspeaker.ipset import IPSet, count_buggy

DEFAULT_HOLD_TIME = 90.0
DEFAULT_PEER_PORT = 179
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def yaml_context(communities: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The validation context for data decoded from YAML: bgp-communities aliases to resolve."""
    return {"from_yaml": True, "communities": dict(communities or {})}


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": message})


def _from_yaml(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("from_yaml"))


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """Turn a ValueError-raising value check into a validator that reports the message unchanged."""

    def run(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise _invalid(str(exc)) from None

    return run


def _scalar_text(value: Any) -> Any:
    """A string field's value: the literal text of any scalar, as Go's decoder gives a string field.

    From ``yamlload`` that is the text itself (``Plain`` or quoted); a scalar with an explicit tag, or a
    Python caller's number, becomes its text too. Null (a null list item) is Go's zero value, "".
    """
    if isinstance(value, str):
        return value  # pydantic stores a plain str, never the Plain subclass
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _null_items(value: Any) -> Any:
    """A list of objects: a null item (``-`` alone) is an object with every field at its default, as in Go."""
    if isinstance(value, list | tuple):
        return [{} if item is None else item for item in value]
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise _invalid("must not be empty")
    if values.has_control_chars(value):
        raise _invalid(f"must not contain control characters, got {quote(value)}")
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]
Name = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_nonempty)]
LabelKey = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_checked(values.check_label_key))]
LabelValue = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_checked(values.check_label_value))]
Int = Annotated[StrictInt, BeforeValidator(plain_int)]
Bool = Annotated[StrictBool, BeforeValidator(plain_bool)]
Asn = Annotated[Int, Field(ge=1, le=4294967295)]
Uint32 = Annotated[Int, Field(ge=0, le=4294967295)]
AddressRange = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_checked(values.check_address_range))]
LargeCommunity = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_checked(values.parse_large_community))]


def _resolve_community(value: str, info: ValidationInfo) -> str:
    aliases: Mapping[str, str] = (info.context or {}).get("communities", {}) if isinstance(info.context, dict) else {}
    if value in aliases:
        return aliases[value]
    try:
        return values.parse_community(value)
    except ValueError as exc:
        if ":" in value:
            raise _invalid(str(exc)) from None
        names = [quote(a) for _, a in zip(range(6), aliases, strict=False)]
        defined = ", ".join(names[:5]) + (f" and {len(aliases) - 5} more" if len(aliases) > 5 else "") or "none"
        raise _invalid(
            f"{quote(value)} is neither a bgp-communities alias (defined: {defined}) nor a community in AA:NN form"
        ) from None


Community = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_resolve_community)]
StandardCommunity = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_checked(values.parse_community))]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=_kebab,
        validate_by_alias=True,
        validate_by_name=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        # Go's decoder leaves a field at its default for an explicit null (``auto-assign: ~``); match that,
        # but only for known keys so that an unknown key is still reported even when its value is null.
        if isinstance(data, dict):
            known = {f.alias for f in cls.model_fields.values()} | set(cls.model_fields)
            return {k: v for k, v in data.items() if v is not None or k not in known}
        return data


class SecretRef(_Model):
    """A key of a Secret in the lbspeaker namespace."""

    name: Annotated[Name, AfterValidator(_checked(lambda v: values.check_dns_subdomain(v, "Secret name")))]
    key: Annotated[Name, Field(pattern=r"^[-._a-zA-Z0-9]+$")] = "password"


class SelectorRequirement(_Model):
    key: LabelKey
    operator: Text
    values: tuple[LabelValue, ...] = Field(default=(), validate_default=True)

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, value: str) -> str:
        if value not in OPERATORS:
            raise _invalid(f"unknown operator {quote(value)}: expected one of {', '.join(OPERATORS)}")
        return value

    @field_validator("values")
    @classmethod
    def _values_fit_operator(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        operator = info.data.get("operator")
        if operator in ("In", "NotIn") and not value:
            raise _invalid(f"operator {quote(operator)} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and value:
            raise _invalid(f"operator {quote(operator)} takes no values, got {show(list(value))}")
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


class NodeSelector(_Model):
    """A Kubernetes label selector over node labels; all its terms must hold. Empty selects every node."""

    match_labels: dict[LabelKey, LabelValue] = {}
    match_expressions: Annotated[tuple[SelectorRequirement, ...], BeforeValidator(_null_items)] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


def selects(selectors: Sequence[NodeSelector], labels: Mapping[str, str]) -> bool:
    """The node-selectors rule of a peer or pool: no selectors means every node, else any one must match."""
    return not selectors or any(s.matches(labels) for s in selectors)


# MetalLB's defaults for the fields a bfd profile leaves out.
BFD_DEFAULT_INTERVAL_MS = 300
BFD_DEFAULT_MULTIPLIER = 3
BFD_DEFAULT_MINIMUM_TTL = 254


class BfdProfile(_Model):
    """BFD timers for the peers naming this profile (MetalLB's fields; the defaults are above).

    Echo mode is not supported: a profile asking for it still runs asynchronous mode, and
    ``config check`` says so.
    """

    name: Name
    receive_interval: Annotated[Int, Field(ge=10, le=60000)] | None = None
    transmit_interval: Annotated[Int, Field(ge=10, le=60000)] | None = None
    detect_multiplier: Annotated[Int, Field(ge=2, le=255)] | None = None
    echo_interval: Annotated[Int, Field(ge=10, le=60000)] | None = None
    echo_mode: Bool = False
    passive_mode: Bool = False
    minimum_ttl: Annotated[Int, Field(ge=1, le=254)] | None = None


class BgpAdvertisement(_Model):
    """How an assigned IP is announced over BGP. ``communities`` are resolved to "AA:NN" form."""

    aggregation_length: Annotated[Int, Field(ge=0, le=32)] = 32
    aggregation_length_v6: Annotated[Int, Field(ge=0, le=128)] = 128
    localpref: Uint32 | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()

    @field_validator("communities", "large_communities")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for community in value:
            if community in seen:
                raise _invalid(f"community {quote(community)} is listed more than once")
            seen.add(community)
        return value


class AddressPool(_Model):
    """A named set of addresses handed out to LoadBalancer Services and announced by one protocol."""

    name: Name
    protocol: Annotated[Literal["layer2", "bgp"], BeforeValidator(_scalar_text)]
    addresses: tuple[AddressRange, ...]
    auto_assign: Bool = True
    avoid_buggy_ips: Bool = False
    bgp_advertisements: Annotated[tuple[BgpAdvertisement, ...], BeforeValidator(_null_items)] = ()
    node_selectors: Annotated[tuple[NodeSelector, ...], BeforeValidator(_null_items)] = ()

    @field_validator("addresses")
    @classmethod
    def _some_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _invalid("must list at least one address range (CIDR or first-last)")
        return value

    @field_validator("bgp_advertisements", mode="before")
    @classmethod
    def _only_in_bgp_pools(cls, value: Any, info: ValidationInfo) -> Any:
        # Checked before the advertisements themselves: in a layer2 pool their content does not matter.
        protocol = info.data.get("protocol")
        if protocol not in (None, "bgp") and value:
            name = info.data.get("name")
            pool = f"pool {quote(name)}" if name is not None else "this pool"
            raise _invalid(f"only valid in a bgp pool, {pool} is {protocol}")
        return value

    @model_validator(mode="after")
    def _default_advertisement(self) -> AddressPool:
        # MetalLB announces a bgp pool without advertisements as plain /32 and /128 routes; making that
        # advertisement explicit spares every consumer the special case. The model is frozen, so the
        # default is filled in the way a frozen dataclass's __post_init__ would.
        if self.protocol == "bgp" and not self.bgp_advertisements:
            object.__setattr__(self, "bgp_advertisements", (BgpAdvertisement(),))
        return self

    @cached_property
    def ipset(self) -> IPSet:
        return IPSet.from_ranges(self.addresses)

    def size(self, version: int) -> int:
        """How many addresses of IP ``version`` the controller can hand out from this pool: those of its
        ranges, less the ones ending in .0 and .255 when ``avoid_buggy_ips`` (``ipset.count_buggy``, the
        rule the controller counts and allocates by)."""
        total = 0
        for first, last in self.ipset.intervals(version):
            total += last - first + 1 - (count_buggy(version, first, last) if self.avoid_buggy_ips else 0)
        return total


def _duration(field: str, minimum: int) -> Callable[[Any, ValidationInfo], Any]:
    def parse(value: Any, info: ValidationInfo) -> Any:
        if _from_yaml(info):
            # MetalLB decoded these as strings and then ran time.ParseDuration: "hold-time: 0" is valid,
            # "hold-time: 90" is missing its unit.
            value = _scalar_text(value)
        if isinstance(value, str):
            try:
                return values.parse_bgp_timer(value, field, minimum)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"expected a duration such as '90s', got {show(value)}")
        return value

    return parse


def _password(value: str) -> str | None:
    # The error messages must not echo the password: they end up in logs and Events.
    if not value:
        return None
    if values.has_control_chars(value):
        raise _invalid("must not contain line breaks or other control characters (value not shown)")
    if len(value.encode()) > values.MAX_MD5_KEY:
        raise _invalid(f"is longer than the {values.MAX_MD5_KEY} bytes TCP MD5 allows (value not shown)")
    return value


def _optional_text(value: str) -> str | None:
    return value or None


class Peer(_Model):
    """A BGP session the speakers open from the nodes that match ``node_selectors``."""

    peer_address: Annotated[Text, AfterValidator(_checked(lambda v: values.parse_ip_text(v, "peer-address")))]
    peer_asn: Asn
    my_asn: Asn
    peer_port: Annotated[Int, Field(ge=0, le=65535), AfterValidator(lambda v: v or DEFAULT_PEER_PORT)] = (
        DEFAULT_PEER_PORT
    )
    hold_time: Annotated[float, BeforeValidator(_duration("hold-time", 3))] = DEFAULT_HOLD_TIME
    keepalive_time: Annotated[float | None, BeforeValidator(_duration("keepalive-time", 1))] = None
    router_id: (
        Annotated[Text, AfterValidator(_checked(lambda v: values.parse_ip_text(v, "router-id", version=4)))] | None
    ) = None
    source_address: (
        Annotated[Text, AfterValidator(_checked(lambda v: values.parse_ip_text(v, "source-address")))] | None
    ) = None
    password: Annotated[Text | None, AfterValidator(lambda v: v if v is None else _password(v))] = Field(
        default=None, repr=False
    )
    password_secret: SecretRef | None = None
    ebgp_multihop: Bool = False
    node_selectors: Annotated[tuple[NodeSelector, ...], BeforeValidator(_null_items)] = ()
    bfd_profile: Annotated[Text | None, AfterValidator(lambda v: v if v is None else _optional_text(v))] = None

    @model_validator(mode="after")
    def _default_keepalive(self) -> Peer:
        # RFC 4271 suggests a keepalive of a third of the hold time; MetalLB uses that default too.
        if self.keepalive_time is None:
            object.__setattr__(self, "keepalive_time", float(int(self.hold_time / 3)))
        return self


class Config(_Model):
    """The whole pool configuration, after validation (and after merging several ConfigMaps)."""

    address_pools: tuple[AddressPool, ...] = ()
    peers: tuple[Peer, ...] = ()
    bgp_communities: dict[Name, StandardCommunity] = {}
    bfd_profiles: tuple[BfdProfile, ...] = ()

    def pool(self, name: str) -> AddressPool | None:
        for pool in self.address_pools:
            if pool.name == name:
                return pool
        return None
