"""What a frame says under a content fault of :mod:`feeds.sim.faults`, for any venue.

Pure: bytes in, bytes out; no I/O, no clock. One mechanism serves every venue: a venue
declares where its frames and REST bodies carry ids and levels (a :class:`WireShape`,
beside its protocol), and the functions here decode the JSON (each non-integer number kept
as its own text, compared as :class:`~decimal.Decimal`), change it there, and encode it
again in the same key order: what a fault does not change is sent as the venue wrote it.
A frame that does not have the shape's paths (a trade, an ack, a pong, not JSON at all)
comes out unchanged.

- :func:`rewrite_frame` applies one frame's :class:`~feeds.sim.faults.FrameFault`:
  ``ids`` ``mangle`` moves the frame's last id (Binance ``u``, OKX ``seqId``, Bybit ``u``)
  :data:`ID_JUMP` ahead, ``far`` moves every id of the frame that far; ``numbers`` renders
  one price or quantity (the one at ``pick``) as ``" 2.5 "``, ``"+2.5"``, ``"2_5.5"``,
  fullwidth or Arabic-Indic digits (a JSON number becomes such a string); ``cross`` puts a
  bid at twice the frame's highest price (above every ask, so the book crosses);
  ``oversize`` appends that many deletions of asks beyond the frame's highest price (the
  book is unchanged, the frame is huge); ``alter`` adds one to one quantity (the one at
  ``pick``; a deletion becomes a level), ids untouched: a copy that disagrees with the
  other connections' copies of the same ids.
- :func:`rewrite_body` appends far asks with a real quantity to a REST book, and changes
  its first quantity (``alter``).
- :class:`IdRestart` renumbers ids after a venue restart: per symbol and id space, the
  first id seen becomes the restart's low first id and later ids keep their distance to it;
  the first message keeps its links to the previous id (OKX's ``prevSeqId``).
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any
from typing import Final
from typing import Literal

import msgspec

from feeds.sim.faults import FrameFault
from feeds.sim.faults import NumberStyle

#: How far ahead a mangled or far-future id is moved.
ID_JUMP: Final = 10**12

#: A path into a decoded JSON value: keys, list indexes, ``"*"`` for every item.
Path = tuple[str | int, ...]
Side = Literal["bid", "ask", "mixed"]


def _raw_number(text: str) -> msgspec.Raw:
    # Kept as written: a Decimal would encode 0.00000000 as 0E-8, which the venue never sends.
    return msgspec.Raw(text.encode())


_decoder: Final = msgspec.json.Decoder(float_hook=_raw_number)
_encoder: Final = msgspec.json.Encoder()
_FULLWIDTH: Final = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
_ARABIC_INDIC: Final = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


class WireShape(msgspec.Struct, frozen=True):
    """Where a venue's frames (or REST bodies) carry ids and levels.

    ``ids``: ``(path, space)`` of every id field, the one a ``mangle`` moves last; ids of
    one space are renumbered together after a restart. ``sides``: ``(path, side)`` of
    every level list (``mixed``: each level names its side at ``side_key``, ``bid_value``
    or ``ask_value``). A level is a list or an object; ``price`` and ``qty`` index it.
    ``symbol``: path of the symbol in a frame; ``symbol_param``: the REST query parameter
    naming it.
    """

    sides: tuple[tuple[Path, Side], ...]
    ids: tuple[tuple[Path, str], ...] = ()
    #: Id fields (of ``ids``) that name the previous message's id (OKX ``prevSeqId``): the
    #: first message after a restart keeps it, as OKX announces a sequence reset.
    links: tuple[Path, ...] = ()
    symbol: Path = ()
    symbol_param: str = ""
    price: int | str = 0
    qty: int | str = 1
    side_key: str = "side"
    bid_value: str = "bid"
    ask_value: str = "ask"


def _slots(node: Any, path: Path) -> list[tuple[Any, str | int]]:
    """``(container, key)`` of every value at ``path`` in ``node``."""
    found: list[tuple[Any, str | int]] = []
    if not path:
        return found
    head, rest = path[0], path[1:]
    if head == "*":
        keys: list[str | int] = []
        if isinstance(node, list):
            keys = list(range(len(node)))
        elif isinstance(node, dict):
            keys = list(node)
        items = [(node, k) for k in keys]
    elif _has(node, head):
        items = [(node, head)]
    else:
        return found
    for container, key in items:
        if rest:
            found += _slots(container[key], rest)
        else:
            found.append((container, key))
    return found


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(key, str) and key in node
    return isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node)


def _decode(frame: bytes) -> Any:
    try:
        return _decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


class _Levels:
    """The level lists of one decoded message under ``shape``."""

    def __init__(self, message: Any, shape: WireShape) -> None:
        self.shape = shape
        #: ``(level list, side)`` of every level list found.
        self.lists: list[tuple[list[Any], Side]] = [
            (c[k], side)
            for path, side in shape.sides
            for c, k in _slots(message, path)
            if isinstance(c[k], list)
        ]

    def all(self) -> list[Any]:
        return [level for levels, _ in self.lists for level in levels]

    def side_list(self, side: Literal["bid", "ask"]) -> list[Any] | None:
        for levels, kind in self.lists:
            if kind in (side, "mixed"):
                return levels
        return None

    def make(self, template: Any, side: Literal["bid", "ask"], price: Any, qty: Any) -> Any:
        """A level like ``template`` on ``side`` with ``price`` and ``qty``."""
        level = copy.copy(template)
        level[self.shape.price] = price
        level[self.shape.qty] = qty
        if isinstance(level, dict) and self.shape.side_key in level:
            value = self.shape.bid_value if side == "bid" else self.shape.ask_value
            level[self.shape.side_key] = value
        return level


def _number(value: Any) -> Decimal:
    if isinstance(value, msgspec.Raw):
        return Decimal(bytes(value).decode())
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _render(template: Any, value: Decimal) -> Any:
    """``value`` as ``template`` is sent: a string, or a JSON number in fixed point."""
    text = format(value, "f")
    return text if isinstance(template, str) else msgspec.Raw(text.encode())


def _like(template: Any, value: Decimal) -> Any:
    """``value`` in the type and decimals of ``template`` (a string or a JSON number)."""
    exponent = _number(template).as_tuple().exponent
    assert isinstance(exponent, int)
    return _render(template, value.quantize(Decimal(1).scaleb(exponent)))


def _highest(levels: _Levels, side: Literal["bid", "ask"]) -> tuple[list[Any], Any] | None:
    """The level list of ``side`` and the level of the highest price of the message; None
    when the message has no levels or no list for ``side``."""
    every = levels.all()
    into = levels.side_list(side)
    if not every or into is None:
        return None
    price = levels.shape.price
    return into, max(every, key=lambda lv: _number(lv[price]))


def _far_asks(levels: _Levels, count: int, zero: bool) -> bool:
    """Append ``count`` asks beyond twice the highest price (deletions when ``zero``)."""
    found = _highest(levels, "ask")
    if found is None:
        return False
    asks, template = found
    shape = levels.shape
    top = _number(template[shape.price])
    exponent = top.as_tuple().exponent
    assert isinstance(exponent, int)
    step = Decimal(1).scaleb(exponent)
    qty = _like(template[shape.qty], Decimal(0)) if zero else _nonzero_qty(levels)
    start = 2 * top  # same exponent as ``step``: the sums need no rounding
    price_template = template[shape.price]
    for i in range(1, count + 1):
        asks.append(levels.make(template, "ask", _render(price_template, start + i * step), qty))
    return True


def _nonzero_qty(levels: _Levels) -> Any:
    qty = levels.shape.qty
    every = levels.all()
    for level in every:
        if _number(level[qty]) > 0:
            return level[qty]
    return _like(every[0][qty], Decimal(1))


def _cross(levels: _Levels) -> bool:
    """Put a bid at twice the highest price of the message, best first."""
    found = _highest(levels, "bid")
    if found is None:
        return False
    bids, template = found
    price_at = levels.shape.price
    price = _like(template[price_at], 2 * _number(template[price_at]))
    bids.insert(0, levels.make(template, "bid", price, _nonzero_qty(levels)))
    return True


def styled(text: str, style: NumberStyle) -> str:
    """``text`` (a plain decimal) rendered in a non-decimal ``style``: ``" 2.5 "``,
    ``"+2.5"``, ``"2_5.5"`` (``"0_2.5"`` for one integer digit), fullwidth or Arabic-Indic
    digits."""
    if style == "space":
        return f" {text} "
    if style == "plus":
        return "+" + text
    if style == "underscore":
        head, dot, frac = text.partition(".")
        head = head[0] + "_" + head[1:] if len(head) >= 2 else "0_" + head
        return head + dot + frac
    return text.translate(_FULLWIDTH if style == "fullwidth" else _ARABIC_INDIC)


def _restyle(levels: _Levels, style: NumberStyle, pick: float) -> bool:
    shape = levels.shape
    slots = [(level, key) for level in levels.all() for key in (shape.price, shape.qty)]
    if not slots:
        return False
    level, key = slots[min(int(pick * len(slots)), len(slots) - 1)]
    value = level[key]
    level[key] = styled(value if isinstance(value, str) else format(_number(value), "f"), style)
    return True


def _alter(levels: _Levels, pick: float) -> bool:
    """Add one to the quantity of the level at ``pick``, in its own decimals."""
    every = levels.all()
    if not every:
        return False
    level = every[min(int(pick * len(every)), len(every) - 1)]
    qty_at = levels.shape.qty
    level[qty_at] = _like(level[qty_at], _number(level[qty_at]) + 1)
    return True


def _move_ids(message: Any, shape: WireShape, how: Literal["mangle", "far"]) -> bool:
    slots = [(c, k) for path, _ in shape.ids for c, k in _slots(message, path) if _is_id(c[k])]
    if how == "mangle":
        slots = slots[-1:]
    for container, key in slots:
        container[key] += ID_JUMP
    return bool(slots)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rewrite_frame(frame: bytes, shape: WireShape, fault: FrameFault) -> bytes:
    """``frame`` as it says ``fault``'s content faults (see the module docstring); the
    frame unchanged when nothing in it applies."""
    if not fault.rewrites:
        return frame
    message = _decode(frame)
    if message is None:
        return frame
    levels = _Levels(message, shape)
    changed = False
    if fault.ids is not None:
        changed |= _move_ids(message, shape, fault.ids)
    if fault.numbers is not None:
        changed |= _restyle(levels, fault.numbers, fault.pick)
    if fault.cross:
        changed |= _cross(levels)
    if fault.oversize:
        changed |= _far_asks(levels, fault.oversize, zero=True)
    if fault.alter:
        changed |= _alter(levels, fault.pick)
    return _encoder.encode(message) if changed else frame


def rewrite_body(body: bytes, shape: WireShape, oversize: int, *, alter: bool = False) -> bytes:
    """A REST book ``body`` with ``oversize`` more asks beyond twice its highest price, and
    with ``alter`` one more in the quantity of its first level (the best bid)."""
    message = _decode(body)
    if message is None:
        return body
    levels = _Levels(message, shape)
    changed = bool(oversize) and _far_asks(levels, oversize, zero=False)
    if alter:
        changed |= _alter(levels, 0.0)
    return _encoder.encode(message) if changed else body


class IdRestart:
    """The ids of a venue restarted with ``first_id``: per ``(symbol, space)``, the
    smallest id of the first message seen after the restart becomes ``first_id``, and
    every later id of that space moves by the same amount (ids seen by nothing before
    the restart are thereby renumbered consistently across frames and REST bodies). The
    first message keeps its ``links`` (its previous id, from before the restart), as they
    were sent: renumbered by ``before``, the restart this one follows, where there is one."""

    __slots__ = ("_bases", "_before", "first_id")

    def __init__(self, first_id: int, before: IdRestart | None = None) -> None:
        self.first_id = first_id
        self._bases: dict[tuple[str, str], int] = {}
        # Only the previous restart's bases: what it rendered, never a chain of restarts.
        self._before: dict[tuple[str, str], int] = {} if before is None else before._bases

    def apply(self, data: bytes, shape: WireShape, symbol: str | None = None) -> bytes:
        """``data`` (a frame, or a REST body of ``symbol``) with its ids renumbered."""
        if not shape.ids:
            return data
        message = _decode(data)
        if message is None:
            return data
        if symbol is None:
            named = _slots(message, shape.symbol)
            symbol = str(named[0][0][named[0][1]]) if named else ""
        by_space: dict[str, list[tuple[Any, str | int, bool]]] = {}
        for path, space in shape.ids:
            link = path in shape.links
            by_space.setdefault(space, []).extend(
                (c, k, link) for c, k in _slots(message, path) if _is_id(c[k])
            )
        changed = False
        for space, slots in by_space.items():
            own = [c[k] for c, k, link in slots if not link]
            if not own:
                continue
            first = (symbol, space) not in self._bases
            base = self._bases.setdefault((symbol, space), min(own) - self.first_id)
            before = self._before.get((symbol, space), 0)
            for container, key, link in slots:
                container[key] -= before if first and link else base
            changed = True
        return _encoder.encode(message) if changed else data
