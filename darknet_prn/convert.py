"""``darknet-prn convert-cfg``: ``[partial_shortcut]`` <-> stock Darknet cfg sections.

``--to explicit``
    Every plain ``[shortcut]`` (no ``weights_type``, same width/height as its sources) whose sources do
    not all have the previous layer's channel count becomes a ``[partial_shortcut]`` with the same
    ``from`` and ``activation``: without ``channels``/``sparsity`` it adds the first ``min(C, C_s)``
    channels of each source, exactly what Darknet's ``[shortcut]`` does. The pattern that ``--to darknet``
    writes for a smaller ``c`` (``[route] groups`` + ``[route]`` back + ``[shortcut]``) is folded back into
    one ``[partial_shortcut] channels=c``.

``--to darknet``
    Every ``[partial_shortcut]`` becomes stock Darknet sections (which Darknet itself and OpenCV read):
    a source whose ``c`` is the default ``min(C, C_s)`` is used directly by a ``[shortcut]``; a source
    with a smaller ``c`` is first cut to its leading ``c`` channels by ``[route] layers=SRC groups=G
    group_id=0`` with ``G = C_s / c`` (so ``c`` must divide ``C_s``), then ``[route]`` back to the previous
    layer, and a ``[shortcut]`` adds them. Every later layer reference (``from``, ``layers``,
    ``share_index``, ``embedding_layer``, ``yolo_layer``) is renumbered, keeping its relative/absolute
    form.

Neither direction adds or removes weights (the new sections are ``[route]``/``[shortcut]`` without
``weights_type``), so the ``.weights`` file is used unchanged. The text is edited in place: comments,
blank lines and every untouched line stay byte for byte. The result is checked by re-reading it: every
mapped layer must keep its output shape and the ``.weights`` layout must be identical.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from .cfg import read_cfg_text
from .errors import CfgError
from .fileio import atomic_write, read_cfg_file_text
from .geometry import shortcut_channels
from .graph import build_network

DIRECTIONS = ("explicit", "darknet")

# keys holding layer indices (negative = relative), per canonical section type
REF_KEYS = {
    "route": ("layers",),
    "shortcut": ("from",),
    "partial_shortcut": ("from",),
    "scale_channels": ("from",),
    "sam": ("from",),
    "convolutional": ("share_index",),
    "yolo": ("embedding_layer",),
    "gaussian_yolo": ("embedding_layer",),
    "contrastive": ("yolo_layer",),
}

MARKER = "# darknet-prn convert-cfg:"
_INT = re.compile(r"[+-]?\d+")


@dataclass
class Conversion:
    """Result of a conversion: the new text, ``index_map`` (old layer index -> new index, ``None`` for
    layers folded away) and ``converted`` (old indices of the rewritten shortcut sections)."""
    text: str
    index_map: dict
    converted: list = field(default_factory=list)
    direction: str = ""
    path: str = "<cfg>"


# ----------------------------------------------------------------------------------------------------
# text helpers
# ----------------------------------------------------------------------------------------------------
def _newline(lines) -> str:
    for ln in lines:
        if ln.endswith("\r\n"):
            return "\r\n"
        if ln.endswith("\n"):
            return "\n"
    return "\n"


def _split_value(line: str):
    """``key = value # comment`` -> (``key = ``, ``value``, `` # comment\\n``)."""
    eq = line.index("=")
    head, rest = line[:eq + 1], line[eq + 1:]
    body = rest.rstrip("\r\n")
    eol = rest[len(body):]
    m = re.search(r"[#;]", body)
    if m:
        return head, body[:m.start()], body[m.start():] + eol
    return head, body, eol


def _rewrite_ints(line: str, values) -> str:
    head, body, tail = _split_value(line)
    it = iter(values)
    new_body = _INT.sub(lambda m: str(next(it)), body)
    return head + new_body + tail


def _replace_list(line: str, values) -> str:
    """A reference list rewritten with ``values`` (possibly another count), spacing kept where possible."""
    head, body, tail = _split_value(line)
    if len(_INT.findall(body)) == len(values):
        return _rewrite_ints(line, values)
    lead = body[:len(body) - len(body.lstrip())]
    trail = body[len(body.rstrip()):]
    return head + lead + ",".join(str(v) for v in values) + trail + tail


def _rename_header(line: str, new: str) -> str:
    return re.sub(r"\[[^\]]*\]", f"[{new}]", line, count=1)


# ----------------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------------
@dataclass
class _Gen:
    """A generated section ``[name]`` with ``key=`` the resolved ``targets`` and ``extra`` lines. A target
    is ``(('old', j), relative)`` (old layer j) or ``(('gen', k), relative)`` (the k-th generated section
    of the same group)."""
    name: str
    key: str
    targets: list
    extra: list


@dataclass
class _Plan:
    rename: str | None = None           # new section name for the original section
    drop_keys: tuple = ()               # option keys whose (first) line is removed
    from_targets: list | None = None    # replacement 'from' targets for the original section
    before: list = field(default_factory=list)    # _Gen sections inserted before it
    comment: str | None = None          # marker comment before the inserted sections
    removed: bool = False               # folded away (explicit direction)
    set_channels: int | None = None     # `channels=` written after `from=` (explicit direction, folded)


def _token_relative(sec, key):
    """Relative/absolute flag of each integer in a reference option (as written)."""
    text = sec.options[key].value
    text = re.split(r"[#;]", text, maxsplit=1)[0]
    return [int(t) < 0 for t in _INT.findall(text)]


def _users(layers):
    users = {}
    for l in layers:
        for r in l.refs:
            users.setdefault(r, set()).add(l.index)
    return users


def _plan_explicit(net, path):
    layers = net.layers
    plans = {}
    users = _users(layers)
    for l in layers:
        if l.type != "shortcut" or l.p["strided"] or l.p["weights_type"] != "none":
            continue
        i, C = l.index, l.in_shape[0]
        fold = _match_lowering(layers, l, users)
        if fold is not None:
            k, sources, chans = fold
            full = [shortcut_channels(C, layers[s].out_shape[0]) for s, _ in sources]
            drop = ("weights_type", "weights_normalization")
            plans[i] = _Plan(rename="partial_shortcut", drop_keys=drop, from_targets=sources,
                             set_channels=None if chans == full else chans[0])
            for j in range(i - 1 - k, i):
                plans[j] = _Plan(removed=True)
            continue
        if any(layers[r].out_shape[0] != C for r in l.refs):
            plans[i] = _Plan(rename="partial_shortcut", drop_keys=("weights_type", "weights_normalization"))
    return plans


def _match_lowering(layers, sc, users):
    """Recognises ``[route] SRC groups=G group_id=0`` x k, ``[route] PREV``, ``[shortcut]`` (what
    ``--to darknet`` writes). Returns (k, sources [(old index, relative flag)], channels per source)."""
    i = sc.index
    C = sc.in_shape[0]
    if i < 3:
        return None
    back = layers[i - 1]
    if back.type != "route" or len(back.refs) != 1 or back.p["groups"] != 1:
        return None
    k = 0
    while i - 2 - k >= 0:
        g = layers[i - 2 - k]
        if g.type == "route" and len(g.refs) == 1 and g.p["groups"] > 1 and g.p["group_id"] == 0 \
                and (i - 2 - k) in sc.refs:
            k += 1
        else:
            break
    if k == 0:
        return None
    prev = i - 2 - k
    if back.refs[0] != prev or prev < 0:
        return None
    block = set(range(i - 1 - k, i))
    for j in block:
        if users.get(j, set()) - {i}:
            return None
    if i - 1 in sc.refs:
        return None     # the route back is itself a source: not our pattern
    rel = _token_relative(sc.section, "from")
    sources, chans = [], []
    for r, is_rel in zip(sc.refs, rel):
        if r in block:
            g = layers[r]
            src = g.refs[0]
            if src in block:
                return None
            src_rel = _token_relative(g.section, "layers")[0]
            sources.append((src, src_rel))
            chans.append(shortcut_channels(C, g.out_shape[0]))
        else:
            sources.append((r, is_rel))
            chans.append(shortcut_channels(C, layers[r].out_shape[0]))
    if len(set(chans)) != 1:
        return None     # one `channels=` cannot express it; leave the stock sections
    if any(layers[s].out_shape[1:] != sc.in_shape[1:] for s, _ in sources):
        return None
    return k, sources, chans


def _plan_darknet(net, path):
    layers = net.layers
    plans = {}
    for l in layers:
        if l.type != "partial_shortcut":
            continue
        i, C = l.index, l.in_shape[0]
        sec = l.section
        rel = _token_relative(sec, "from")
        gens, targets = [], []
        for r, is_rel, c in zip(l.refs, rel, l.p["channels"]):
            cs = layers[r].out_shape[0]
            if c == shortcut_channels(C, cs):
                targets.append((("old", r), is_rel))
                continue
            if cs % c:
                key = "channels" if sec.has("channels") else "sparsity"
                val = sec.options[key].value
                raise CfgError(f"[partial_shortcut] {key}={val} gives c={c}, which does not divide the {cs} "
                               f"channels of from-layer {r}: no exact stock-Darknet lowering ([route] "
                               f"groups=G group_id=0 can only select {cs}/G leading channels)",
                               path, sec.options[key].line)
            gens.append(_Gen("route", "layers", [(("old", r), is_rel)],
                             [f"groups={cs // c}", "group_id=0"]))
            targets.append((("gen", len(gens) - 1), True))
        if not gens:
            plans[i] = _Plan(rename="shortcut", drop_keys=("channels", "sparsity"))
            continue
        # the route back to the previous layer, then the shortcut
        gens.append(_Gen("route", "layers", [(("old", i - 1), True)], []))
        key = "channels" if sec.has("channels") else "sparsity"
        what = f"{key}={sec.options[key].value}"
        comment = (f"{MARKER} [partial_shortcut] {what} (c={min(l.p['channels'])}) lowered to "
                   f"[route] groups + [route] back + [shortcut]")
        plans[i] = _Plan(rename="shortcut", drop_keys=("channels", "sparsity"), from_targets=targets,
                         before=gens, comment=comment)
    return plans


# ----------------------------------------------------------------------------------------------------
# emission
# ----------------------------------------------------------------------------------------------------
def convert_cfg(text: str, to: str, path: str = "<cfg>") -> Conversion:
    """Converts cfg ``text``; see the module docstring. Raises :class:`CfgError` for bad input."""
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, not {to!r}")
    sections = read_cfg_text(text, path)
    net = build_network(sections, path=path, warn=False)
    layers = net.layers
    plans = _plan_explicit(net, path) if to == "explicit" else _plan_darknet(net, path)

    lines = text.splitlines(keepends=True)
    nl = _newline(lines)
    starts = [s.line - 1 for s in sections] + [len(lines)]
    out = lines[:starts[1]]                          # preamble + [net]

    # new indices: generated sections come before their shortcut
    index_map, new = {}, 0
    gen_index = {}
    for l in layers:
        p = plans.get(l.index)
        if p is not None and p.removed:
            index_map[l.index] = None
            continue
        if p is not None and p.before:
            gen_index[l.index] = list(range(new, new + len(p.before)))
            new += len(p.before)
        index_map[l.index] = new
        new += 1

    def resolve(target, self_new, gens_of):
        (kind, j), is_rel = target
        t = gens_of[j] if kind == "gen" else index_map[j]
        if t is None:
            raise RuntimeError(f"layer {j} was folded away but is still referenced")
        return t - self_new if is_rel else t

    for l in layers:
        i = l.index
        sec = sections[i + 1]
        region = lines[starts[i + 1]:starts[i + 2]]
        p = plans.get(i)
        if p is not None and p.removed:
            continue
        # a removed block right after this section: drop our marker comment from this region's tail
        nxt = plans.get(i + 1)
        if nxt is not None and nxt.removed:
            region = [ln for ln in region if not ln.lstrip().startswith(MARKER)]
        if p is not None and p.before:
            if p.comment:
                out.append(p.comment + nl)
            gi = gen_index[i]
            for k, g in enumerate(p.before):
                refs = [resolve(t, gi[k], gi) for t in g.targets]
                out.append(f"[{g.name}]" + nl)
                out.append(f"{g.key}={','.join(str(v) for v in refs)}" + nl)
                out.extend(e + nl for e in g.extra)
                out.append(nl)
        self_new = index_map[i]
        drop_lines = set()
        if p is not None:
            for key in p.drop_keys:
                if key in sec.options:
                    drop_lines.add(sec.options[key].line)
                for o in sec.extra:
                    if o.key == key:
                        drop_lines.add(o.line)
        edits = {}
        for key in REF_KEYS.get(sec.type, ()):
            if key not in sec.options or sec.options[key].value is None:
                continue
            opt = sec.options[key]
            if p is not None and p.from_targets is not None and key == "from":
                continue
            toks = _INT.findall(re.split(r"[#;]", opt.value, maxsplit=1)[0])
            vals = []
            for t in toks:
                v = int(t)
                old = i + v if v < 0 else v
                if 0 <= old < i and index_map.get(old) is not None:
                    nv = index_map[old] - self_new if v < 0 else index_map[old]
                else:
                    nv = v          # not a layer of this cfg (e.g. a sentinel): leave it
                vals.append(nv)
            if [int(t) for t in toks] != vals:
                edits[opt.line] = vals
        if p is not None and p.from_targets is not None:
            opt = sec.options["from"]
            if to == "darknet":
                vals = [resolve(t, self_new, gen_index.get(i, [])) for t in p.from_targets]
            else:
                vals = [index_map[s] - self_new if is_rel else index_map[s] for s, is_rel in p.from_targets]
            edits[opt.line] = ("from", vals)
        set_channels = p.set_channels if p is not None else None
        for k, ln in enumerate(region):
            lineno = starts[i + 1] + k + 1
            if k == 0 and p is not None and p.rename:
                out.append(_rename_header(ln, p.rename))
                continue
            if lineno in drop_lines:
                continue
            if lineno in edits:
                e = edits[lineno]
                if isinstance(e, tuple):
                    _, vals = e
                    out.append(_replace_list(ln, vals))
                    if set_channels is not None:
                        out.append(f"channels={set_channels}" + nl)
                else:
                    out.append(_rewrite_ints(ln, e))
                continue
            out.append(ln)
    new_text = "".join(out)
    conv = Conversion(new_text, index_map, sorted(k for k, v in plans.items() if not v.removed), to, path)
    _verify(net, conv, path)
    return conv


def convert_cfg_text(text: str, to: str, path: str = "<cfg>") -> str:
    """``text`` converted ``to`` ``"explicit"`` or ``"darknet"`` (see :func:`convert_cfg`)."""
    return convert_cfg(text, to, path).text


def _verify(old_net, conv: Conversion, path):
    """Re-reads the result: mapped layers keep their output shape; the .weights layout is unchanged."""
    new_net = build_network(read_cfg_text(conv.text, path), path=path, warn=False)
    for i, j in conv.index_map.items():
        if j is None:
            continue
        a, b = old_net.layers[i], new_net.layers[j]
        if a.out_shape != b.out_shape:
            raise RuntimeError(f"convert-cfg internal error: layer {i} -> {j} changed shape "
                               f"{a.out_shape} -> {b.out_shape}")
    arrs = lambda n: [(a.name, a.shape) for l in n.layers for a in l.arrays]   # noqa: E731
    if arrs(old_net) != arrs(new_net):
        raise RuntimeError("convert-cfg internal error: the .weights layout changed")
    for l in new_net.layers:
        if conv.direction == "darknet" and l.type == "partial_shortcut":
            raise RuntimeError("convert-cfg internal error: a [partial_shortcut] is left")


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------
read_text = read_cfg_file_text


def write_text_atomic(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8", errors="surrogateescape")), "cfg", CfgError)


def add_arguments(p):
    p.add_argument("cfg", help="input Darknet .cfg")
    p.add_argument("-o", "--output", default="-", help="output .cfg (default: standard output)")
    p.add_argument("--to", required=True, choices=DIRECTIONS,
                   help="explicit: partial [shortcut]s -> [partial_shortcut]; "
                        "darknet: [partial_shortcut] -> stock [route]/[shortcut] sections")


def run(args) -> int:
    text = read_text(args.cfg)
    conv = convert_cfg(text, args.to, args.cfg)
    if args.output == "-":
        sys.stdout.write(conv.text)
    else:
        write_text_atomic(args.output, conv.text)
        n_new = max((v for v in conv.index_map.values() if v is not None), default=-1) + 1
        print(f"{args.output}: {len(conv.converted)} section(s) converted ({len(conv.index_map)} -> "
              f"{n_new} layers)", file=sys.stderr)
    return 0
