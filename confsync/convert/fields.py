"""A Go value's fields (`.Name`) and elements (`index`) as Jinja2 expressions, by the value's kind
(values.py): only what consul-template's structs hold and confsync's values give the same way.
"""

from __future__ import annotations

import re

from confsync.convert.gotemplate import Pos
from confsync.convert.values import LISTS, MAP_KEYS, MAPS, Cascade, Refusal, Value, jinja_string, paren

_KV_V2 = re.compile(r"^[^/]+/data/.")  # a KV v2 read written the way consul-template reads it
_TWO_SEGMENTS = re.compile(r"^[^/]+/[^/]+/")


def _kv_v2(secret: Value, pos: Pos) -> bool:
    """Whether a secret's path reads KV v2 (its .Data holds data and metadata): told by the path,
    or by the start of a computed one when that shows its first two segments."""
    known, how = secret.extra
    if how == "literal":
        return bool(_KV_V2.match(known))
    if known.partition("/")[2].startswith("data/"):
        return True
    if not _TWO_SEGMENTS.match(known):
        raise Refusal(pos, f".Data of a secret whose path is computed from {known!r}: whether it is KV v2 "
                           "(.Data.data) cannot be told; start the path with mount/data/ or mount/folder/")
    return False


# consul-template's structs (dependency/*.go, Consul's api) → the consul source's fields, each of a
# kind whose Go printing confsync matches; time.Time fields (NotBefore, ValidAfter…) are left out:
# Go prints them in its own layout.
STRUCT_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "service": {"Address": ("address", "str"), "Port": ("port", "int"), "Node": ("node", "str"),
                "NodeID": ("node_id", "str"), "NodeAddress": ("node_address", "str"),
                "NodeDatacenter": ("node_datacenter", "str"),
                "NodeTaggedAddresses": ("node_tagged_addresses", "strmap"), "NodeMeta": ("node_meta", "strmap"),
                "ID": ("id", "str"), "Name": ("name", "str"),
                "Tags": ("tags", "strlist"), "ServiceMeta": ("meta", "strmap"), "Status": ("status", "str"),
                "Weights": ("weights", "weights"), "Checks": ("checks", "checks"),
                "ServiceTaggedAddresses": ("tagged_addresses", "addrmap")},
    "svcaddr": {"Address": ("address", "str"), "Port": ("port", "int")},
    "check": {"Node": ("node", "str"), "CheckID": ("check_id", "str"), "Name": ("name", "str"),
              "Status": ("status", "str"), "Notes": ("notes", "str"), "Output": ("output", "str"),
              "ServiceID": ("service_id", "str"), "ServiceName": ("service_name", "str"),
              "ServiceTags": ("service_tags", "strlist"), "Type": ("type", "str")},
    "weights": {"Passing": ("passing", "int"), "Warning": ("warning", "int")},
    "catalognode": {"Node": ("node", "node"), "Services": ("services", "nodeservices")},
    "node": {"ID": ("id", "str"), "Node": ("node", "str"), "Address": ("address", "str"),
             "Datacenter": ("datacenter", "str"), "TaggedAddresses": ("tagged_addresses", "strmap"),
             "Meta": ("meta", "strmap")},
    "nodeservice": {"ID": ("id", "str"), "Service": ("name", "str"), "Tags": ("tags", "strlist"),
                    "Meta": ("meta", "strmap"), "Port": ("port", "int"), "Address": ("address", "str")},
    "caroot": {"ID": ("id", "str"), "Name": ("name", "str"), "SerialNumber": ("serial_number", "int"),
               "SigningKeyID": ("signing_key_id", "str"), "RootCertPEM": ("root_cert", "str"),
               "IntermediateCerts": ("intermediate_certs", "strlist"), "Active": ("active", "bool")},
    "caleaf": {"SerialNumber": ("serial_number", "str"), "CertPEM": ("cert_pem", "str"),
               "PrivateKeyPEM": ("private_key_pem", "str"), "Service": ("service", "str"),
               "ServiceURI": ("service_uri", "str")},
}
_STRUCT_NAMES = {"service": "service", "check": "health check", "weights": "service's weights", "catalognode": "node",
                 "node": "node", "nodeservice": "node's service", "caroot": "CA root", "caleaf": "leaf certificate",
                 "svcaddr": "tagged address"}


def field_of(value: Value, name: str, pos: Pos) -> Value:
    k, code = value.kind, value.code
    if k in STRUCT_FIELDS:
        fields = STRUCT_FIELDS[k]
        if name not in fields:
            raise Refusal(pos, f".{name} of a {_STRUCT_NAMES[k]}: translated are {', '.join(fields)}")
        attr, kind = fields[name]
        if (k, name) == ("service", "Tags"):  # consul-template sorts them (dependency.go deepCopyAndSortTags)
            return Value(f"({code}.tags | sort(case_sensitive=true))", kind)
        return Value(f"{paren(code)}.{attr}", kind, nonneg=name == "Port")
    if k == "kvpair":
        if name not in ("Key", "Value"):
            raise Refusal(pos, f".{name} of a key pair: only .Key and .Value are translated")
        return Value(value.extra[0] if name == "Key" else value.extra[1], "str")
    if k == "snippet":
        if name not in ("Name", "Tags"):
            raise Refusal(pos, f".{name} of a catalog service: only .Name and .Tags are translated")
        return Value(value.extra[0], "str") if name == "Name" else Value(value.extra[1], "strlist")
    if k == "secret":
        if name != "Data":
            raise Refusal(pos, f".{name} of a secret: only .Data is translated (confsync keeps leases to itself)")
        # KV v2 wraps the fields in data (and metadata); everything else is the fields themselves
        return Value(code, "secretdata" if _kv_v2(value, pos) else "anymap", value.extra)
    if k == "secretdata":
        if name == "data":
            return Value(code, "anymap")
        raise Refusal(pos, f".Data.{name} of a KV v2 secret: only .Data.data is translated")
    if k == "anymap" and value.extra and name in ("data", "metadata"):  # a secret's .Data, not KV v2 by its path
        raise Refusal(pos, f".Data.{name} of the secret at {value.extra[0]!r}: on a KV v2 mount consul-template "
                           f"puts the fields in .Data.data, on others .Data.{name} is a field of that name, and "
                           "which one cannot be told without Vault: write a KV v2 path as mount/data/…")
    if k in MAPS or k in ("any", "json"):
        elem = {"any": "any", "json": "json", **MAPS}[k]
        if elem == "kvpair":
            raise Refusal(pos, f".{name} of a byKey group")
        return Value(f"{paren(code)}[{jinja_string(name)}]", elem)
    if k == "error":
        raise Cascade(pos, "")
    raise Refusal(pos, f".{name} of a {k} value")


_ZEROS = {"strmap": '""', "bytag": "[]", "portmap": "[]", "addrmap": '{"address": "", "port": 0}'}


def index_of(value: Value, key: Value, pos: Pos) -> Value:
    k = value.kind
    if k in _ZEROS and key.kind == MAP_KEYS.get(k, "str"):  # Go's index: the zero value for a missing key
        return Value(f"{paren(value.code)}.get({key.code}, {_ZEROS[k]})", MAPS[k])
    if k in ("anymap", "json", "any") and key.kind in ("str", "int"):
        return Value(f"{paren(value.code)}[{key.code}]", "json" if k == "json" else "any")
    if k in LISTS and k != "intlist" and key.kind == "int" and key.nonneg:
        return Value(f"{paren(value.code)}[{key.code}]", LISTS[k])
    if k == "error":
        raise Cascade(pos, "")
    raise Refusal(pos, f"index of a {k} value by a {key.kind}")
