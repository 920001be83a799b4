"""The fault language of the simulated venues (pure: no I/O, no clock, no event loop).

A spec is a ``;``-separated list of clauses ``TARGET:ITEM,ITEM,...`` (whitespace is
ignored); see ``docs/faults.md`` for the grammar and examples::

    ep0:close@5;ep1:stall@3+2;ep*:drop=0.01,dup=0.01,delay=5ms~2ms,reorder=3;
    ep2:corrupt=0.001;ep1:refuse@10+2;ep0:notice@8;rest:429@4+2,retry_after=1;
    rest:5xx=0.1;rest:slow=200ms;venue:restart@20;ep1:mangle@4+1,numbers=0.01;
    ep2:farid=0.001,cross@6+0.1,oversize@7+0.1,flap@8+3;rest:oversize@9+1

:func:`parse` turns a spec into a :class:`FaultSpec` (msgspec Structs) or raises
:class:`FaultSpecError` naming the bad token. :class:`FaultPlan` answers, for a seed, pure
questions per endpoint: what happens to frame ``i`` (:meth:`FaultPlan.decide`), when
connections are closed, stalled, refused or given a notice, and what the REST endpoint
answers at ``t`` (:meth:`FaultPlan.rest_fault`). Frame faults that change what a frame
says (ids, numbers, crossing levels, oversize) are answered as a :class:`FrameFault` and
applied by :mod:`feeds.sim.rewrite` with the venue's wire shape. Every random draw is a
function of ``(seed, endpoint, index)`` only, so answers do not depend on the order of the
questions.
Times ``t_s`` are seconds since the venue started.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Final
from typing import Literal

import msgspec
import msgspec.structs

CorruptHow = Literal["truncate", "invalid"]
#: How a frame's venue ids are falsified: ``mangle`` moves its last id (``u``) 10**12 ahead
#: of the others, ``far`` moves every id of the frame 10**12 ahead.
IdFault = Literal["mangle", "far"]
#: How one number of a frame is rendered when it is not a plain decimal.
NumberStyle = Literal["space", "plus", "underscore", "fullwidth", "arabic"]
NUMBER_STYLES: Final[tuple[NumberStyle, ...]] = (
    "space",
    "plus",
    "underscore",
    "fullwidth",
    "arabic",
)
#: Frame faults that change what a frame says; each is ``KIND=p`` or ``KIND@T+D``.
CONTENT_KINDS: Final = ("mangle", "farid", "numbers", "cross", "oversize", "alter")
#: The smallest first id after a venue restart (room for ids a few below it, e.g. ``pu``).
RESTART_FIRST_ID: Final = 1000
#: Levels an oversized frame or REST body carries when ``oversize_levels`` is not given.
DEFAULT_OVERSIZE_LEVELS: Final = 500_000

#: Statuses a REST window or probability may name; ``5xx`` picks one of 500/502/503/504.
REST_STATUSES: Final = ("429", "418", "5xx", "500", "502", "503", "504")
_FIVE_XX: Final = (500, 502, 503, 504)
_NUMBER: Final = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_RE: Final = re.compile(rf"({_NUMBER})(ms|s)?")
_TARGET_RE: Final = re.compile(r"ep(\d+|\*)|rest(?:\[([A-Za-z0-9._-]+)\])?|venue")


class FaultSpecError(ValueError):
    """A spec that does not parse; the message names the bad token."""


class Window(msgspec.Struct, frozen=True):
    """From ``start_s`` for ``duration_s`` seconds."""

    start_s: float
    duration_s: float

    def contains(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.start_s + self.duration_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class ContentWindow(msgspec.Struct, frozen=True):
    """Every frame sent within ``window`` gets the content fault ``kind``
    (one of :data:`CONTENT_KINDS`)."""

    kind: str
    window: Window


class EndpointFaults(msgspec.Struct, frozen=True):
    """The faults of one target (``ep3`` or ``ep*``). None: not set by this clause."""

    closes: tuple[float, ...] = ()
    stalls: tuple[Window, ...] = ()
    refuses: tuple[Window, ...] = ()
    notices: tuple[float, ...] = ()
    flaps: tuple[Window, ...] = ()
    content_windows: tuple[ContentWindow, ...] = ()
    #: Probability per frame of each content kind set by ``KIND=p``.
    content: dict[str, float] = {}
    oversize_levels: int | None = None
    drop: float | None = None
    dup: float | None = None
    delay_s: float | None = None
    jitter_s: float | None = None
    reorder: int | None = None
    corrupt: float | None = None


class RestWindow(msgspec.Struct, frozen=True):
    status: str
    window: Window


class RestFaults(msgspec.Struct, frozen=True):
    windows: tuple[RestWindow, ...] = ()
    #: ``(status, probability)`` per request, checked in order.
    probabilities: tuple[tuple[str, float], ...] = ()
    retry_after_s: float = 1.0
    #: Extra delay of every REST answer; ``slow_windows`` restrict it in time (empty: always).
    slow_s: float = 0.0
    slow_windows: tuple[Window, ...] = ()
    #: Oversized successful answers: in these windows, and with this probability.
    oversize_windows: tuple[Window, ...] = ()
    oversize: float = 0.0
    oversize_levels: int = DEFAULT_OVERSIZE_LEVELS
    #: Successful answers whose best bid quantity is one more than the truth, in these windows.
    alter_windows: tuple[Window, ...] = ()


class VenueFaults(msgspec.Struct, frozen=True):
    """Faults of the whole venue: times at which it restarts its ids."""

    restarts: tuple[float, ...] = ()


class FaultSpec(msgspec.Struct, frozen=True):
    """A parsed spec: ``endpoints`` by target (``"*"`` or the endpoint index as text)."""

    endpoints: dict[str, EndpointFaults] = {}
    rest: RestFaults = RestFaults()
    venue: VenueFaults = VenueFaults()
    #: ``rest[SYMBOL]`` clauses: the REST faults of requests for that symbol (its
    #: ``symbol`` query parameter), in place of ``rest``.
    rest_by_symbol: dict[str, RestFaults] = {}


class FrameFault(msgspec.Struct, frozen=True):
    """What happens to one frame: dropped, sent twice, sent ``delay_s`` late, corrupted,
    or held behind the next ``hold`` frames (reorder); and what it says instead of the
    truth (:mod:`feeds.sim.rewrite` applies these): falsified ``ids``, one number (the
    one at ``pick`` in [0, 1) of its numbers) in a non-decimal ``numbers`` style, a
    crossing bid (``cross``), ``oversize`` extra levels, one quantity (the one at
    ``pick``) changed with the ids untouched (``alter``)."""

    drop: bool = False
    duplicate: bool = False
    delay_s: float = 0.0
    corrupt: CorruptHow | None = None
    hold: int = 0
    ids: IdFault | None = None
    numbers: NumberStyle | None = None
    pick: float = 0.0
    cross: bool = False
    oversize: int = 0
    alter: bool = False

    @property
    def rewrites(self) -> bool:
        """True when the frame's content changes (see :mod:`feeds.sim.rewrite`)."""
        return bool(self.ids or self.numbers or self.cross or self.oversize or self.alter)


NO_FAULT: Final = FrameFault()


class RestFault(msgspec.Struct, frozen=True):
    """An HTTP ``status`` (None: answer normally) after ``extra_delay_s``; ``retry_after_s``
    is set with 429; a normal answer carries ``oversize_levels`` extra levels (0: none), and
    with ``alter`` a best bid quantity one more than the truth."""

    status: int | None
    retry_after_s: float | None
    extra_delay_s: float
    oversize_levels: int = 0
    alter: bool = False


class Action(msgspec.Struct, frozen=True):
    """A timed action: on an endpoint ``close`` (close its connections; new ones
    accepted), ``refuse`` (close and stop listening), ``reopen`` (listen again),
    ``notice``; on the venue (``endpoint`` None) ``restart`` (its ids start again low)."""

    t_s: float
    kind: Literal["close", "refuse", "reopen", "notice", "restart"]
    endpoint: int | None


# --- parsing --------------------------------------------------------------------------------


def _duration(text: str, token: str, default_unit: str = "s") -> float:
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise FaultSpecError(f"bad duration {text!r} in {token!r}")
    value = float(match.group(1))
    unit: str = match.group(2) or default_unit
    return value / 1000.0 if unit == "ms" else value


def _probability(text: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"bad probability {text!r} in {token!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"probability {text!r} not in [0, 1] in {token!r}")
    return value


def _window(text: str, token: str) -> Window:
    start, plus, duration = text.partition("+")
    if not plus:
        raise FaultSpecError(f"{token!r} needs a window T+D")
    return Window(_duration(start, token), _duration(duration, token))


def _count(text: str, token: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise FaultSpecError(f"{token!r} needs an integer >= 1")
    return int(text)


def _endpoint_item(token: str, into: dict[str, object]) -> None:
    if "@" in token:
        kind, _, when = token.partition("@")
        if kind == "close":
            into["closes"] = (*into.get("closes", ()), _duration(when, token))  # type: ignore[misc]
        elif kind == "notice":
            into["notices"] = (*into.get("notices", ()), _duration(when, token))  # type: ignore[misc]
        elif kind in ("stall", "refuse", "flap"):
            key = kind + "s"
            into[key] = (*into.get(key, ()), _window(when, token))  # type: ignore[misc]
        elif kind in CONTENT_KINDS:
            window = ContentWindow(kind, _window(when, token))
            into["content_windows"] = (*into.get("content_windows", ()), window)  # type: ignore[misc]
        else:
            raise FaultSpecError(f"unknown endpoint fault {token!r}")
        return
    kind, eq, value = token.partition("=")
    if not eq:
        raise FaultSpecError(f"unknown endpoint fault {token!r}")
    if kind in ("drop", "dup", "corrupt"):
        into[kind] = _probability(value, token)
    elif kind in CONTENT_KINDS:
        content = into.setdefault("content", {})
        assert isinstance(content, dict)
        content[kind] = _probability(value, token)
    elif kind == "oversize_levels":
        into["oversize_levels"] = _count(value, token)
    elif kind == "delay":
        fixed, _, jitter = value.partition("~")
        into["delay_s"] = _duration(fixed, token, "ms")
        into["jitter_s"] = _duration(jitter, token, "ms") if jitter else 0.0
    elif kind == "reorder":
        if not value.isdigit() or int(value) < 1:
            raise FaultSpecError(f"reorder window must be an integer >= 1 in {token!r}")
        into["reorder"] = int(value)
    else:
        raise FaultSpecError(f"unknown endpoint fault {token!r}")


def _rest_item(token: str, into: dict[str, object]) -> None:
    if "@" in token:
        kind, _, when = token.partition("@")
        if kind == "slow":
            # slow@T+D=200ms
            window_text, eq, value = when.partition("=")
            if not eq:
                raise FaultSpecError(f"{token!r} needs =DELAY")
            into["slow_windows"] = (*into.get("slow_windows", ()), _window(window_text, token))  # type: ignore[misc]
            into["slow_s"] = _duration(value, token, "ms")
            return
        if kind in ("oversize", "alter"):
            windows = f"{kind}_windows"
            into[windows] = (*into.get(windows, ()), _window(when, token))  # type: ignore[misc]
            return
        if kind not in REST_STATUSES:
            raise FaultSpecError(f"unknown REST fault {token!r}")
        into["windows"] = (*into.get("windows", ()), RestWindow(kind, _window(when, token)))  # type: ignore[misc]
        return
    kind, eq, value = token.partition("=")
    if not eq:
        raise FaultSpecError(f"unknown REST fault {token!r}")
    if kind in REST_STATUSES:
        into["probabilities"] = (*into.get("probabilities", ()), (kind, _probability(value, token)))  # type: ignore[misc]
    elif kind == "retry_after":
        into["retry_after_s"] = _duration(value, token)
    elif kind == "slow":
        into["slow_s"] = _duration(value, token, "ms")
    elif kind == "oversize":
        into["oversize"] = _probability(value, token)
    elif kind == "oversize_levels":
        into["oversize_levels"] = _count(value, token)
    else:
        raise FaultSpecError(f"unknown REST fault {token!r}")


def _venue_item(token: str, into: dict[str, object]) -> None:
    kind, at, when = token.partition("@")
    if kind != "restart" or not at:
        raise FaultSpecError(f"unknown venue fault {token!r}")
    into["restarts"] = tuple(sorted((*into.get("restarts", ()), _duration(when, token))))  # type: ignore[misc]


def parse(spec: str) -> FaultSpec:
    """Parse a spec (see the module doc); an empty spec has no faults."""
    endpoints: dict[str, dict[str, object]] = {}
    rest: dict[str, object] = {}
    venue: dict[str, object] = {}
    rest_by_symbol: dict[str, dict[str, object]] = {}
    for clause in "".join(spec.split()).split(";"):
        if not clause:
            continue
        target, colon, items = clause.partition(":")
        match = _TARGET_RE.fullmatch(target)
        if not colon or match is None:
            raise FaultSpecError(
                f"bad target {target!r} in {clause!r} (ep<N>, ep*, rest, rest[SYMBOL] or venue)"
            )
        for token in items.split(","):
            if not token:
                raise FaultSpecError(f"empty item in {clause!r}")
            if target == "rest":
                _rest_item(token, rest)
            elif target == "venue":
                _venue_item(token, venue)
            elif match.group(2) is not None:
                _rest_item(token, rest_by_symbol.setdefault(match.group(2), {}))
            else:
                _endpoint_item(token, endpoints.setdefault(match.group(1), {}))
    try:
        return FaultSpec(
            {key: msgspec.convert(value, EndpointFaults) for key, value in endpoints.items()},
            msgspec.convert(rest, RestFaults),
            venue=msgspec.convert(venue, VenueFaults),
            rest_by_symbol={
                key: msgspec.convert(value, RestFaults) for key, value in rest_by_symbol.items()
            },
        )
    except msgspec.ValidationError as exc:  # pragma: no cover - the items are typed above
        raise FaultSpecError(str(exc)) from None


# --- the plan -------------------------------------------------------------------------------


_SCALARS: Final = ("drop", "dup", "delay_s", "jitter_s", "reorder", "corrupt", "oversize_levels")


def _merge(base: EndpointFaults, own: EndpointFaults) -> EndpointFaults:
    """``own`` over ``base``: timed faults add up, scalars set by ``own`` win."""
    return msgspec.structs.replace(
        base,
        closes=tuple(sorted(base.closes + own.closes)),
        stalls=base.stalls + own.stalls,
        refuses=base.refuses + own.refuses,
        notices=tuple(sorted(base.notices + own.notices)),
        flaps=base.flaps + own.flaps,
        content_windows=base.content_windows + own.content_windows,
        content={**base.content, **own.content},
        **{k: getattr(own, k) for k in _SCALARS if getattr(own, k) is not None},
    )


class _Draws:
    """Uniform draws in [0, 1) that are a pure function of ``(seed, key)``."""

    __slots__ = ("_values",)

    def __init__(self, seed: int, key: str) -> None:
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=48).digest()
        self._values: list[float] = [v / 2.0**64 for v in struct.unpack("<6Q", digest)]

    def __getitem__(self, i: int) -> float:
        return self._values[i]


class FaultPlan:
    """The seeded answers of ``spec`` for a venue of ``n_endpoints`` endpoints."""

    def __init__(self, spec: str | FaultSpec, seed: int, n_endpoints: int) -> None:
        parsed = parse(spec) if isinstance(spec, str) else spec
        if n_endpoints < 1:
            raise ValueError("n_endpoints must be at least 1")
        for key in parsed.endpoints:
            if key != "*" and int(key) >= n_endpoints:
                raise FaultSpecError(f"ep{key} does not exist ({n_endpoints} endpoints)")
        self.spec = parsed
        self.seed = seed
        self.n_endpoints = n_endpoints
        wildcard = parsed.endpoints.get("*", EndpointFaults())
        self.endpoints = [
            _merge(wildcard, parsed.endpoints.get(str(i), EndpointFaults()))
            for i in range(n_endpoints)
        ]

    # --- frames ---------------------------------------------------------------------------

    def decide(self, endpoint: int, frame_index: int, t_s: float = 0.0) -> FrameFault:
        """The fault of the ``frame_index``-th frame sent by ``endpoint`` (counted per
        endpoint, over all its connections) at ``t_s`` (content windows depend on it)."""
        faults = self.endpoints[endpoint]
        content = self._content(endpoint, frame_index, t_s)
        if not (
            faults.drop or faults.dup or faults.delay_s or faults.jitter_s or faults.corrupt
        ) and not (faults.reorder and faults.reorder > 1):
            return content
        draws = _Draws(self.seed, f"frame:{endpoint}:{frame_index}")
        if faults.drop and draws[0] < faults.drop:
            return FrameFault(drop=True)
        corrupt: CorruptHow | None = None
        if faults.corrupt and draws[1] < faults.corrupt:
            corrupt = "truncate" if draws[2] < 0.5 else "invalid"
        delay_s = (faults.delay_s or 0.0) + (faults.jitter_s or 0.0) * draws[3]
        hold = int(draws[4] * faults.reorder) if faults.reorder and faults.reorder > 1 else 0
        return msgspec.structs.replace(
            content,
            duplicate=bool(faults.dup) and draws[5] < (faults.dup or 0.0),
            delay_s=delay_s,
            corrupt=corrupt,
            hold=hold,
        )

    def _content(self, endpoint: int, frame_index: int, t_s: float) -> FrameFault:
        """The content faults of one frame: by window at ``t_s``, else by probability."""
        faults = self.endpoints[endpoint]
        if not faults.content and not faults.content_windows:
            return NO_FAULT
        draws = _Draws(self.seed, f"content:{endpoint}:{frame_index}")
        kinds = {w.kind for w in faults.content_windows if w.window.contains(t_s)}
        kinds.update(
            kind
            for i, kind in enumerate(CONTENT_KINDS[:5])
            if draws[i] < faults.content.get(kind, 0.0)
        )
        alter = faults.content.get("alter", 0.0)
        if alter and _Draws(self.seed, f"alter:{endpoint}:{frame_index}")[0] < alter:
            kinds.add("alter")
        if not kinds:
            return NO_FAULT
        ids: IdFault | None = "far" if "farid" in kinds else None
        if "mangle" in kinds:
            ids = "mangle"
        style = NUMBER_STYLES[int(draws[5] * len(NUMBER_STYLES))] if "numbers" in kinds else None
        levels = faults.oversize_levels or DEFAULT_OVERSIZE_LEVELS
        return FrameFault(
            ids=ids,
            numbers=style,
            pick=_Draws(self.seed, f"pick:{endpoint}:{frame_index}")[0],
            cross="cross" in kinds,
            oversize=levels if "oversize" in kinds else 0,
            alter="alter" in kinds,
        )

    # --- time windows ---------------------------------------------------------------------

    def closed_at(self, endpoint: int) -> tuple[float, ...]:
        """Times at which ``endpoint`` closes its connections (it accepts new ones)."""
        return self.endpoints[endpoint].closes

    def stalled(self, endpoint: int, t_s: float) -> float | None:
        """When ``endpoint`` is stalled at ``t_s``, the end of the stall; else None."""
        ends = [w.end_s for w in self.endpoints[endpoint].stalls if w.contains(t_s)]
        return max(ends) if ends else None

    def refusing(self, endpoint: int, t_s: float) -> bool:
        """Whether ``endpoint`` refuses connections at ``t_s``."""
        return any(w.contains(t_s) for w in self.endpoints[endpoint].refuses)

    def resume_s(self, endpoint: int, t_s: float) -> float:
        """The first time at or after ``t_s`` at which ``endpoint`` is not stalled
        (overlapping and back-to-back stalls are one)."""
        while (end_s := self.stalled(endpoint, t_s)) is not None:
            t_s = end_s
        return t_s

    def flapping(self, endpoint: int, t_s: float) -> bool:
        """Whether ``endpoint`` flaps at ``t_s``: each connection is closed after the
        first frame it was sent."""
        return any(w.contains(t_s) for w in self.endpoints[endpoint].flaps)

    def restarts(self) -> tuple[float, ...]:
        """Times at which the venue restarts its ids, in order."""
        return self.spec.venue.restarts

    def restart_first_id(self, t_s: float) -> int:
        """The low id the venue's ids start again from at its restart at ``t_s``: seeded,
        in ``[RESTART_FIRST_ID, 2 * RESTART_FIRST_ID)``."""
        draw = _Draws(self.seed, f"restart:{t_s!r}")[0]
        return RESTART_FIRST_ID + int(draw * RESTART_FIRST_ID)

    def notice_due(self, endpoint: int, t_s: float) -> tuple[float, ...]:
        """The notice times of ``endpoint`` at or before ``t_s``."""
        return tuple(n for n in self.endpoints[endpoint].notices if n <= t_s)

    def schedule(self) -> list[Action]:
        """Every timed action, in time order (ties: venue restarts first, then by
        endpoint, then kind)."""
        actions = [Action(t, "restart", None) for t in self.spec.venue.restarts]
        for i, faults in enumerate(self.endpoints):
            actions += [Action(t, "close", i) for t in faults.closes]
            actions += [Action(t, "notice", i) for t in faults.notices]
            for window in faults.refuses:
                actions.append(Action(window.start_s, "refuse", i))
                actions.append(Action(window.end_s, "reopen", i))
        order = {"restart": 0, "notice": 1, "close": 2, "refuse": 3, "reopen": 4}
        actions.sort(key=lambda a: (a.t_s, -1 if a.endpoint is None else a.endpoint, order[a.kind]))
        return actions

    # --- REST -----------------------------------------------------------------------------

    def rest_fault(self, t_s: float, request_index: int = 0, symbol: str = "") -> RestFault | None:
        """The fault of the ``request_index``-th REST request, arriving at ``t_s``, for
        ``symbol`` (its ``rest[SYMBOL]`` clauses replace the ``rest`` ones); None when it is
        answered normally and on time."""
        rest = self.spec.rest_by_symbol.get(symbol, self.spec.rest)
        draws = _Draws(self.seed, f"rest:{request_index}")
        chosen: str | None = None
        for window in rest.windows:
            if window.window.contains(t_s):
                chosen = window.status
                break
        if chosen is None:
            for i, (status, probability) in enumerate(rest.probabilities):
                if _Draws(self.seed, f"rest:{request_index}:{i}")[0] < probability:
                    chosen = status
                    break
        slow = rest.slow_s if not rest.slow_windows else 0.0
        if any(w.contains(t_s) for w in rest.slow_windows):
            slow = rest.slow_s
        oversize = any(w.contains(t_s) for w in rest.oversize_windows) or (
            rest.oversize > 0.0
            and _Draws(self.seed, f"rest-oversize:{request_index}")[0] < rest.oversize
        )
        levels = rest.oversize_levels if oversize else 0
        alter = any(w.contains(t_s) for w in rest.alter_windows)
        if chosen is None and slow == 0.0 and not levels and not alter:
            return None
        code: int | None = None
        if chosen == "5xx":
            code = _FIVE_XX[int(draws[1] * len(_FIVE_XX))]
        elif chosen is not None:
            code = int(chosen)
        return RestFault(code, rest.retry_after_s if code == 429 else None, slow, levels, alter)


# --- one connection's frames -------------------------------------------------------------


class Release(msgspec.Struct, frozen=True):
    """What a connection's writer does with one admitted frame: wait until ``not_before_s``
    (on the clock of the frames' ``deliver_at_s``) and until the endpoint is not stalled,
    then send ``frames`` in order (none while the frame is held)."""

    not_before_s: float
    frames: tuple[bytes, ...]


class FaultedStream:
    """The frame faults of one connection's writer, without I/O or clock: frames go in
    with their :class:`FrameFault` and delivery time, :class:`Release` comes out.

    - ``drop``: nothing comes out (no wait either).
    - ``delay_s``: the frame is not sent before ``deliver_at_s + delay_s``, nor before any
      frame admitted earlier (order kept: a delay never reorders).
    - ``corrupt``: the frame comes out made unparseable (:func:`corrupt`).
    - ``hold`` (reorder): the frame is kept and comes out after the next ``hold`` frames
      that are sent; :meth:`flush` gives what is still held (the writer calls it after a
      quiet interval).
    - ``duplicate``: the frame comes out twice in a row.
    """

    __slots__ = ("_held", "_last_s")

    def __init__(self) -> None:
        #: ``(frames still to pass, frame)``, oldest first.
        self._held: list[tuple[int, bytes]] = []
        self._last_s = 0.0

    @property
    def holding(self) -> bool:
        """True while some frame is held behind later ones."""
        return bool(self._held)

    def admit(self, fault: FrameFault, deliver_at_s: float, frame: bytes) -> Release | None:
        """The release of ``frame`` under ``fault``; None when it is dropped."""
        if fault.drop:
            return None
        self._last_s = max(deliver_at_s + fault.delay_s, self._last_s)
        if fault.corrupt is not None:
            frame = corrupt(frame, fault.corrupt)
        if fault.hold:
            self._held.append((fault.hold, frame))
            return Release(self._last_s, ())
        frames = [frame, frame] if fault.duplicate else [frame]
        frames += [late for remaining, late in self._held if remaining <= 1]
        self._held = [(remaining - 1, late) for remaining, late in self._held if remaining > 1]
        return Release(self._last_s, tuple(frames))

    def flush(self) -> tuple[bytes, ...]:
        """Every held frame, oldest first; nothing is held afterwards."""
        held, self._held = self._held, []
        return tuple(frame for _, frame in held)


# --- corruption -----------------------------------------------------------------------------


def corrupt(frame: bytes, how: CorruptHow) -> bytes:
    """``frame`` made unparseable: ``truncate`` keeps its first half (at least 1 byte, and
    never the whole frame), ``invalid`` prefixes a ``}`` (never valid JSON)."""
    if how == "truncate":
        return frame[: max(1, len(frame) // 2)] if len(frame) > 1 else b"{"
    return b"}" + frame
