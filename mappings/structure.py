"""Message structures (HL7 v2 abstract message syntax) and the matching of segments to groups.

A structure is written as in the standard's chapters, one line per group::

    ORU_R01: MSH [{SFT}] {PATIENT_RESULT} [DSC]
    PATIENT_RESULT: [PATIENT] {ORDER_OBSERVATION}
    OBSERVATION: OBX [{NTE}]

``[X]`` is optional, ``{X}`` repeats, ``[{X}]`` both; three-character names are segments,
longer names are groups. One structure serves every version we accept (2.3 to 2.8): it is
the union of theirs, since matching goes by segment name.

Matching is greedy and forgiving, like HAPI's: a segment goes to the first place at or after
the current one, in the current group or an enclosing one, that accepts it. A segment no
place accepts (a Z-segment, or one the structure does not know) stays in the group where it
appeared and is reported as not mapped; it is never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mappings.errors import MappingTableError
from mappings.hl7v2.tokenizer import Segment

__all__ = ["GroupDef", "GroupNode", "SegmentNode", "Structure", "parse_structure"]

_TOKEN = re.compile(r"(\[?)(\{?)([A-Z0-9_]+)(\}?)(\]?)")


@dataclass(slots=True)
class Element:
    """One child of a group definition: a segment or a group, optional, repeating."""

    name: str
    optional: bool
    repeat: bool
    group: GroupDef | None = None
    first: frozenset[str] = frozenset()


@dataclass(slots=True)
class GroupDef:
    name: str
    children: list[Element] = field(default_factory=list)
    # segment name → the indexes of the children that can start with it, ascending
    starts: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Structure:
    """A compiled message structure: its root group and every segment name it knows."""

    name: str
    root: GroupDef
    segment_names: frozenset[str]

    def match(self, segments: list[Segment]) -> tuple[GroupNode, list[SegmentNode]]:
        """Place each segment in a group instance; returns the root and the segment nodes."""
        root = GroupNode(self.name, 1, None)
        nodes: list[SegmentNode] = []
        sequences: dict[str, int] = {}
        position = _match_group(self, self.root, root, segments, 0, nodes, sequences, True)
        assert position == len(segments)
        return root, nodes


class GroupNode:
    """One occurrence of a group in a message."""

    __slots__ = ("name", "occurrence", "parent", "children", "_counts")

    def __init__(self, name: str, occurrence: int, parent: GroupNode | None) -> None:
        self.name = name
        self.occurrence = occurrence
        self.parent = parent
        self.children: list[SegmentNode | GroupNode] = []
        self._counts: dict[str, int] = {}

    def new_group(self, name: str) -> GroupNode:
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        node = GroupNode(name, count, self)
        self.children.append(node)
        return node

    def segments(self, name: str) -> list[SegmentNode]:
        return [c for c in self.children if isinstance(c, SegmentNode) and c.name == name]

    def groups(self, name: str) -> list[GroupNode]:
        return [c for c in self.children if isinstance(c, GroupNode) and c.name == name]

    def is_within(self, other: GroupNode) -> bool:
        node: GroupNode | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def path(self) -> str:
        parts: list[str] = []
        node: GroupNode | None = self
        while node is not None and node.parent is not None:
            parts.append(f"{node.name}[{node.occurrence}]")
            node = node.parent
        return "/".join(reversed(parts))


class SegmentNode:
    """One segment of the message, where it sits, and whether the structure expected it."""

    __slots__ = ("segment", "name", "index", "sequence", "group", "expected")

    def __init__(
        self, segment: Segment, index: int, sequence: int, group: GroupNode, expected: bool
    ) -> None:
        self.segment = segment
        self.name = segment.name
        self.index = index
        self.sequence = sequence
        self.group = group
        self.expected = expected

    def group_path(self) -> str:
        return self.group.path()


def _match_group(
    structure: Structure,
    definition: GroupDef,
    node: GroupNode,
    segments: list[Segment],
    position: int,
    nodes: list[SegmentNode],
    sequences: dict[str, int],
    is_root: bool,
) -> int:
    children = definition.children
    starts = definition.starts
    current = 0
    used = [False] * len(children)
    count = len(segments)
    while position < count:
        segment = segments[position]
        name = segment.name
        found = -1
        for index in starts.get(name, ()):
            if index < current:
                continue
            if index == current and used[index] and not children[index].repeat:
                continue
            found = index
            break
        if found < 0:
            if is_root or name not in structure.segment_names:
                _add(node, segment, position, nodes, sequences, expected=False)
                position += 1
                continue
            return position
        current = found
        used[found] = True
        child = children[found]
        if child.group is not None:
            position = _match_group(
                structure,
                child.group,
                node.new_group(child.name),
                segments,
                position,
                nodes,
                sequences,
                False,
            )
        else:
            _add(node, segment, position, nodes, sequences, expected=True)
            position += 1
    return position


def _add(
    node: GroupNode,
    segment: Segment,
    position: int,
    nodes: list[SegmentNode],
    sequences: dict[str, int],
    expected: bool,
) -> None:
    sequence = sequences.get(segment.name, 0) + 1
    sequences[segment.name] = sequence
    segment_node = SegmentNode(segment, position, sequence, node, expected)
    node.children.append(segment_node)
    nodes.append(segment_node)


def parse_structure(name: str, lines: dict[str, str]) -> Structure:
    """Compile ``{group: "abstract syntax"}``; the group called `name` is the root."""
    if name not in lines:
        raise MappingTableError(f"structure {name}: no line for the root group")
    definitions = {group: GroupDef(group) for group in lines}
    for group, syntax in lines.items():
        for match in _TOKEN.finditer(syntax):
            opening_optional, opening_repeat, child, closing_repeat, closing_optional = (
                match.groups()
            )
            if bool(opening_optional) != bool(closing_optional) or bool(opening_repeat) != bool(
                closing_repeat
            ):
                raise MappingTableError(f"structure {name}: unbalanced brackets around {child}")
            is_segment = len(child) == 3
            if not is_segment and child not in definitions:
                raise MappingTableError(f"structure {name}: group {child} has no line")
            definitions[group].children.append(
                Element(
                    child,
                    optional=bool(opening_optional),
                    repeat=bool(opening_repeat),
                    group=None if is_segment else definitions[child],
                )
            )
    segment_names: set[str] = set()
    _first_sets(definitions[name], segment_names, set())
    return Structure(name, definitions[name], frozenset(segment_names))


def _first_sets(definition: GroupDef, names: set[str], visiting: set[str]) -> frozenset[str]:
    """Fill each child's `first` set; return the group's (and collect every segment name)."""
    if definition.name in visiting:
        raise MappingTableError(f"group {definition.name} contains itself")
    visiting = visiting | {definition.name}
    group_first: set[str] = set()
    still_open = True
    starts: dict[str, list[int]] = {}
    for index, child in enumerate(definition.children):
        if child.group is None:
            child.first = frozenset({child.name})
            names.add(child.name)
        else:
            child.first = _first_sets(child.group, names, visiting)
        for name in child.first:
            starts.setdefault(name, []).append(index)
        if still_open:
            group_first |= child.first
            if not child.optional:
                still_open = False
    definition.starts = {name: tuple(indexes) for name, indexes in starts.items()}
    return frozenset(group_first)
