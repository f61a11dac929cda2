"""Fuzzing the controller's gRPC API: every method, mutated and malformed messages.

Inputs are random but reproducible: the seed is printed, and ``COBALT_FUZZ_SEED``
replays a run. Each input must end with an answer, never an unhandled error:

- gRPC: any status but ``UNKNOWN`` and ``INTERNAL`` (an unhandled exception or an
  unparseable request), and never ``DEADLINE_EXCEEDED`` for a call that does not
  ask to wait.
- HTTP: any status but 500, or a close, within a deadline; a request that is
  malformed ends with a 4xx or 5xx.

After each batch the controller still answers ``ControllerStatus`` and runs a
dispatch, its memory and open file descriptors stay bounded, and its log has
not grown out of bounds. Counts and figures are printed (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import message as pb_message
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

import cobalt as ct
from cobalt._client import get_client
from cobalt._submit import build_request
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

from fuzz_support import (  # noqa: F401  (fixtures, used by name)
    CHANGES_A_DEPLOYMENT,
    NEVER_WITH_THE_TOKEN,
    PER_METHOD,
    SEED,
    SERVICE,
    Vitals,
    deployment,
    home,
    tiny,
    token_of,
    vitals,
)

pytestmark = pytest.mark.integration

# -- gRPC inputs -----------------------------------------------------------------------

DOUBLES = [math.nan, math.inf, -math.inf, -0.0, -1.0, 1e308, -1e308, 5e-324, 2.0**63, 1e-9]
INTS = {
    FieldDescriptor.TYPE_UINT32: [0, 1, 2**31 - 1, 2**31, 2**32 - 1],
    FieldDescriptor.TYPE_INT32: [-1, -(2**31), 2**31 - 1, 0, -1000],
    FieldDescriptor.TYPE_UINT64: [0, 2**53 + 1, 2**63, 2**64 - 1],
    FieldDescriptor.TYPE_INT64: [-1, -(2**63), 2**63 - 1],
}
JSON_TEXTS = [
    "{}",
    "[]",
    "null",
    "1e999",
    "NaN",
    '{"routes": "x"}',
    '{"routes": [{"path": 1}]}',
    '{"autoscaling": {"min_replicas": -1, "max_replicas": 1e30}}',
    '{"a": ' * 50_000,
    "[" * 200_000 + "]" * 200_000,
    '"\\ud800"',
    "{" + ", ".join(f'"k{i}": {i}' for i in range(2000)) + "}",
]


def hostile_string(rng: random.Random) -> str:
    choice = rng.randrange(12)
    if choice == 0:
        return "a" * rng.choice([1 << 16, 1 << 20, 4 << 20])
    if choice == 1:
        return "".join(chr(rng.choice([0, 1, 0x7F, 0xFFFD, 0x202E, 0x10FFFF])) for _ in range(64))
    if choice == 2:
        return rng.choice(["../../etc/passwd", "/proc/self/environ", "./../controller.json"])
    if choice == 3:
        return "%s%n%x{0}{}" * rng.randrange(1, 50)
    if choice == 4:
        return rng.choice(JSON_TEXTS)
    if choice == 5:
        return "\U0001f642" * rng.randrange(1, 5000)
    if choice == 6:
        return " \t\r\n" * rng.randrange(1, 100)
    if choice == 7:
        return rng.choice(["", "-", ".", "*", "'; DROP TABLE dispatches; --", "\\", "a/b"])
    if choice == 8:
        return os.urandom(rng.randrange(1, 200)).decode("latin-1")
    if choice == 9:
        return "0" * 63 + rng.choice(["g", "G", "", "00"])
    if choice == 10:
        return str(rng.choice(DOUBLES))
    return "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(rng.randrange(1, 300)))


@dataclass
class Known:
    """Real names and addresses, so that inputs reach past the first lookup."""

    dispatch_ids: list[str]
    shas: list[str]
    deployment: str
    manifest_json: str
    working_dir: str

    def plausible_string(self, name: str, rng: random.Random, method: str) -> str:
        if "sha256" in name:
            return rng.choice([*self.shas, hashlib.sha256(os.urandom(8)).hexdigest()])
        if "dispatch_id" in name:
            return rng.choice([*self.dispatch_ids, os.urandom(16).hex(), ""])
        if name in ("name", "deployment"):
            if method.startswith("Dispatch"):
                return rng.choice(["tiny", "fuzz"])
            names = ["fuzz-a", "fuzz-b", "nobody"]
            if method not in CHANGES_A_DEPLOYMENT:
                names.append(self.deployment)
            return rng.choice(names)
        if name.endswith("_json"):
            return rng.choice([self.manifest_json, "{}", '{"type": "local"}'])
        if name == "working_dir":
            return rng.choice([self.working_dir, "/nonexistent", ""])
        if name in ("url", "path"):
            return rng.choice(["/echo", "http://127.0.0.1:9/", ""])
        if name == "gpu":
            return rng.choice(["", "h100", "a100", "tpu"])
        if name == "type":
            return rng.choice(["local", "slurm", ""])
        return rng.choice(["x", "local", "gpu", "fuzz", "0"])


def is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def scalar(
    fd: FieldDescriptor, rng: random.Random, known: Known, method: str, hostile: bool
) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return hostile_string(rng) if hostile else known.plausible_string(fd.name, rng, method)
    if t == FieldDescriptor.TYPE_BYTES:
        if hostile:
            return rng.choice([os.urandom(rng.randrange(1, 1 << 16)), b"\0" * (1 << 20), b""])
        return rng.choice([b"x", b"\x80\x04K\x01.", os.urandom(32)])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(DOUBLES) if hostile else rng.choice([0.0, 0.1, 0.5, 1.0])
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        values = [v.number for v in fd.enum_type.values]
        return rng.choice([*values, 99, -1, 2**31 - 1]) if hostile else rng.choice(values)
    if t in INTS:
        return rng.choice(INTS[t]) if hostile else rng.choice([0, 1, 2, 10])
    raise AssertionError(f"no generator for field type {t} ({fd.full_name})")


def put(
    msg: Any,
    fd: FieldDescriptor,
    rng: random.Random,
    known: Known,
    method: str,
    depth: int,
    hostile: bool,
) -> None:
    """Sets ``fd`` of ``msg`` to a generated value (appends, for repeated fields)."""
    target = getattr(msg, fd.name)
    if fd.message_type is not None and is_map(fd):
        key_fd, value_fd = (
            fd.message_type.fields_by_name["key"],
            fd.message_type.fields_by_name["value"],
        )
        key = scalar(key_fd, rng, known, method, hostile)
        if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
            fill(target[key], rng, known, method, depth + 1)
        else:
            target[key] = scalar(value_fd, rng, known, method, hostile)
        return
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        sub = target.add() if is_repeated(fd) else target
        if depth < 3:
            fill(sub, rng, known, method, depth + 1)
            if hostile:
                mutate(sub, rng, known, method, depth + 1)
        else:
            sub.SetInParent()
        return
    value = scalar(fd, rng, known, method, hostile)
    try:
        if is_repeated(fd):
            target.append(value)
        else:
            setattr(msg, fd.name, value)
    except ValueError:  # an enum number the message refuses to hold
        pass


def fill(msg: Any, rng: random.Random, known: Known, method: str, depth: int = 0) -> None:
    """A plausible message: most fields set to values like a client's."""
    for fd in msg.DESCRIPTOR.fields:
        if rng.random() < 0.7:
            for _ in range(rng.randrange(1, 3) if is_repeated(fd) else 1):
                put(msg, fd, rng, known, method, depth, hostile=False)


def mutate(msg: Any, rng: random.Random, known: Known, method: str, depth: int = 0) -> None:
    """Sets one field to a hostile value, or floods a repeated field."""
    fields = msg.DESCRIPTOR.fields
    if not fields:
        return
    fd = rng.choice(fields)
    if is_repeated(fd) and not is_map(fd) and rng.random() < 0.25:
        count = rng.choice([200, 2000]) if fd.type == FieldDescriptor.TYPE_MESSAGE else 20_000
        for _ in range(count):
            put(msg, fd, rng, known, method, 3, hostile=False)
        return
    put(msg, fd, rng, known, method, depth, hostile=True)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def wire_field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def raw_mutation(data: bytes, descriptor: Descriptor, rng: random.Random) -> tuple[str, bytes]:
    """Bytes no well-behaved client sends: the summary and the bytes."""
    choice = rng.randrange(7)
    if choice == 0 and data:
        cut = rng.randrange(len(data))
        return f"truncated at {cut}/{len(data)}", data[:cut]
    if choice == 1 and data:
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return "bit-flipped", bytes(flipped)
    strings = [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
    if choice == 2 and strings:
        fd = rng.choice(strings)
        bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
        return f"invalid UTF-8 in {fd.name}", data + wire_field(
            fd.number, 2, varint(len(bad)) + bad
        )
    if choice == 3:
        number = rng.choice([1, 2, 3, 999, 536_870_911])
        return f"length {number} beyond the end", data + wire_field(number, 2, varint(1 << 30))
    if choice == 4:
        return "overlong varint", data + wire_field(1, 0, b"\xff" * 11)
    if choice == 5:
        return "unknown fields", data + b"".join(
            wire_field(rng.randrange(100, 1000), rng.choice([0, 1, 2, 5]), os.urandom(9))
            for _ in range(rng.randrange(1, 20))
        )
    return "random bytes", os.urandom(rng.randrange(0, 512))


@dataclass
class Case:
    method: MethodDescriptor
    summary: str
    messages: list[bytes]

    def may_wait(self) -> bool:
        """Whether the call may rightly run to its deadline (it streams, or asks to wait)."""
        if self.method.client_streaming or self.method.server_streaming:
            return True
        cls = pb_message_class(self.method.input_type)
        try:
            msg = cls.FromString(self.messages[0])
        except pb_message.DecodeError:
            return False
        wait = getattr(msg, "wait_s", 0.0)
        return not 0.0 <= wait <= 1.0


def pb_message_class(descriptor: Descriptor) -> Any:
    return getattr(pb, descriptor.name)


def seed_messages(method: MethodDescriptor, known: Known, rng: random.Random) -> list[Any]:
    """Well-formed messages a client would send, to mutate."""
    cls = pb_message_class(method.input_type)
    if method.input_type.name == "DispatchCreateRequest":
        request, payloads = build_request(tiny.build_graph(rng.randrange(100)))
        for sha, data in payloads.items():
            request.payloads.add(sha256=sha, data=data, size=len(data))
        request.wait_s = 0.0
        return [request]
    if method.name == "BlobPut":
        data = os.urandom(rng.randrange(1, 4096))
        half = len(data) // 2
        return [
            pb.BlobChunk(sha256=hashlib.sha256(data).hexdigest(), data=data[:half]),
            pb.BlobChunk(data=data[half:]),
        ]
    msg = cls()
    fill(msg, rng, known, method.name)
    return [msg]


def grpc_cases(method: MethodDescriptor, known: Known, rng: random.Random) -> Iterator[Case]:
    for i in range(PER_METHOD):
        messages = seed_messages(method, known, rng)
        summary = "plausible"
        if i % 4:
            target = rng.choice(messages)
            for _ in range(rng.randrange(1, 3)):
                mutate(target, rng, known, method.name)
            summary = "mutated"
        if method.client_streaming and rng.random() < 0.3:
            messages = rng.choice([[], messages * 50, messages[::-1]])
            summary += f", {len(messages)} messages"
        yield Case(
            method,
            f"{summary}: {messages_summary(messages)}",
            [m.SerializeToString() for m in messages],
        )
    for _ in range(PER_METHOD):
        data = seed_messages(method, known, rng)[0].SerializeToString()
        summary, raw = raw_mutation(data, method.input_type, rng)
        yield Case(method, summary, [raw])


def messages_summary(messages: list[Any]) -> str:
    text = " | ".join(str(m).replace("\n", " ") for m in messages[:2])
    return text[:300] + ("..." if len(text) > 300 else "")


FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}


def invoke(
    channel: grpc.Channel, case: Case, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str]:
    path = f"/{SERVICE.full_name}/{case.method.name}"
    same = bytes  # requests are sent, and answers kept, as raw bytes
    timeout = 3.0 if case.may_wait() else 30.0
    try:
        if case.method.client_streaming:
            channel.stream_unary(path, same, same)(
                iter(case.messages), metadata=metadata, timeout=timeout
            )
        elif case.method.server_streaming:
            for _ in channel.unary_stream(path, same, same)(
                case.messages[0], metadata=metadata, timeout=timeout
            ):
                pass
        else:
            channel.unary_unary(path, same, same)(
                case.messages[0], metadata=metadata, timeout=timeout
            )
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def grpc_failure(case: Case, code: grpc.StatusCode, details: str) -> str | None:
    if code in FORBIDDEN:
        return f"{case.method.name} answered {code.name} ({details[:200]}) to {case.summary}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not case.may_wait():
        return f"{case.method.name} never answered {case.summary}"
    return None


@pytest.fixture(scope="module")
def known(home: ControllerHome, deployment: ct.Deployment, vitals: Vitals) -> Known:
    client = get_client()
    blob = b"fuzz blob " * 100
    sha = hashlib.sha256(blob).hexdigest()
    client.call(client.stub.BlobPut, iter([pb.BlobChunk(sha256=sha, data=blob)]))
    got = client.call(client.stub.DeploymentGet, pb.DeploymentGetRequest(name=deployment.name))
    return Known(
        dispatch_ids=list(vitals.dispatch_ids),
        shas=[sha],
        deployment=deployment.name,
        manifest_json=got.manifest_json,
        working_dir=str(home.path),
    )


def test_every_rpc_answers_mutated_and_malformed_messages_with_a_handled_status(
    home: ControllerHome, vitals: Vitals, known: Known
) -> None:
    rng = random.Random(SEED)
    methods = [m for m in SERVICE.methods if m.name not in NEVER_WITH_THE_TOKEN]
    assert len(methods) >= 20, "the service's methods are read from its descriptor"
    cases = [c for m in methods for c in grpc_cases(m, known, rng)]
    token = (("authorization", f"Bearer {token_of(home)}"),)
    options = [
        ("grpc.max_send_message_length", 1 << 30),
        ("grpc.max_receive_message_length", 1 << 30),
    ]
    codes: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    with grpc.insecure_channel(home.address, options=options) as channel:
        for name in NEVER_WITH_THE_TOKEN:
            stop = SERVICE.methods_by_name[name]
            wrong = (("authorization", "Bearer not-the-token"),)
            code, _ = invoke(channel, Case(stop, "wrong token", [b""]), wrong)
            assert code == grpc.StatusCode.UNAUTHENTICATED, code
        with ThreadPoolExecutor(8) as pool:
            results = pool.map(lambda c: (c, *invoke(channel, c, token)), cases)
            for case, code, details in results:
                codes[f"{case.method.name}:{code.name}"] += 1
                if problem := grpc_failure(case, code, details):
                    failures.append(problem)
    vitals.sent["grpc"] += len(cases) + len(NEVER_WITH_THE_TOKEN)
    by_code = Counter(key.split(":")[1] for key in codes.elements())
    print(
        f"[fuzz seed={SEED}] gRPC: {len(cases)} inputs to {len(methods)} methods in "
        f"{time.monotonic() - started:.1f} s; statuses {dict(by_code)}"
    )
    vitals.check("gRPC")
    failures.sort(key=lambda f: "deserializing" in f)
    assert not failures, f"seed {SEED}: {len(failures)} unhandled:\n" + "\n".join(failures[:40])


def test_a_request_whose_bytes_do_not_parse_is_refused_as_invalid_not_internal(
    home: ControllerHome, vitals: Vitals
) -> None:
    log_before = vitals.log_size()
    token = (("authorization", f"Bearer {token_of(home)}"),)
    bad_utf8 = wire_field(1, 2, b"\x02\xff\xfe")
    with grpc.insecure_channel(home.address) as channel:
        for name, messages in [
            ("BlobHas", [bad_utf8]),
            ("DispatchGet", [b"\x0a\xff\xff\xff\x0f"]),
            ("BlobGet", [bad_utf8]),
            ("BlobPut", [pb.BlobChunk(sha256="0" * 64).SerializeToString(), b"\x12\x05ab"]),
        ]:
            case = Case(SERVICE.methods_by_name[name], "does not parse", messages)
            code, details = invoke(channel, case, token)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
            assert f"not a valid {name} request" in details
        wrong = (("authorization", "Bearer wrong"),)
        case = Case(SERVICE.methods_by_name["BlobHas"], "does not parse", [bad_utf8])
        assert invoke(channel, case, wrong)[0] == grpc.StatusCode.UNAUTHENTICATED
    log = (home.path / "controller.log").read_bytes()[log_before:]
    assert b"Traceback" not in log, log.decode(errors="replace")
