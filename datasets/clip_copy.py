"""Clips cut from an H.264 source without re-encoding: packets copied, frame-exact by an MP4 edit list (no Django).

Re-encoding every clip with x264 cost the pipeline about 6.6x the CPU of decoding the video. When the source is
H.264, 8-bit 4:2:0, in MP4/MOV (what Chromium plays, and what most downloaded videos are), a clip ``[a, b)`` is
written instead by copying the compressed packets that frames ``a .. b-1`` need:

* from the last keyframe at or before frame ``a`` (decoding must start at a keyframe),
* to the last packet, in decoding order, of a frame before ``b`` (B-frames can need a later frame decoded first),

with timestamps shifted so that frame ``a`` is at time 0. The packets before ``a`` (the "preroll") then have
negative times and the MP4 muxer writes an edit list that starts presentation at ``a``; this module then sets that
edit's duration, and the movie's and track's, to exactly ``b - a`` frames, so frames copied only as references past
the end are not shown either. Every FFmpeg-based reader (Chromium, OpenCV, PyAV) presents exactly frames
``a .. b-1`` then, bit-identical to decoding the source. The pixels are the source's: no generation loss. A
reader that ignores MP4 edit lists (decord, some hardware players) would also show the preroll frames and the
references after the end; everything in this project reads clips through FFmpeg (OpenCV, PyAV, Chromium).

A clip costs a demux pass over its packets and a small file write; nothing is decoded. The file holds its preroll
packets (up to a GOP), so it is somewhat larger than a re-encoded one would be for a clip that starts far from a
keyframe, and smaller otherwise (the source's bit rate, no re-encoding at a higher quality).

:func:`copy_refusal` says why a source cannot be copied (another codec, 10-bit, 4:2:2, no timestamps, ...); the
pipeline then re-encodes, as before.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import numpy as np

COPYABLE_CODECS = frozenset({"h264"})
COPYABLE_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p"})  # 8-bit 4:2:0: what every browser decodes
COPYABLE_CONTAINERS = ("mov", "mp4")  # libavformat's "mov,mp4,m4a,3gp,3g2,mj2" demuxer: avcC extradata to copy


class CannotCopy(Exception):
    """The source's packets cannot be copied into a clip (the reason is the message)."""


@dataclass(frozen=True)
class _Packet:
    pts: int
    dts: int | None
    keyframe: bool
    presented: bool  # False: before the source's own edit list starts (decoded as a reference, never shown)


@dataclass
class PacketIndex:
    """The video stream's packets in decoding order, with frame numbers in presentation order (of the presented
    packets: frame i is the i-th presented frame, as OpenCV counts)."""
    packets: list[_Packet]
    pts_sorted: list[int]  # presentation times of the frames: frame i is at pts_sorted[i]
    end_pts: int  # where the last frame ends
    time_base: Fraction

    @property
    def frame_count(self) -> int:
        return len(self.pts_sorted)

    @cached_property
    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``pts``, ``presented`` and the decoding-order indices of the keyframes, as arrays: a long video's many
        clips are planned with array operations, not a Python scan of every packet per clip."""
        pts = np.array([p.pts for p in self.packets], dtype=np.int64)
        presented = np.array([p.presented for p in self.packets], dtype=bool)
        keyframes = np.flatnonzero([p.keyframe for p in self.packets])
        return pts, presented, keyframes


def copy_refusal(path: str | os.PathLike) -> str | None:
    """Why clips of the video at ``path`` cannot be copied, or None when they can."""
    try:
        with av.open(os.fspath(path)) as container:
            if not any(name in container.format.name.split(",") for name in COPYABLE_CONTAINERS):
                return f"the container is {container.format.name}, not MP4/MOV"
            if not container.streams.video:
                return "the file has no video stream"
            context = container.streams.video[0].codec_context
            if context.name not in COPYABLE_CODECS:
                return f"the video codec is {context.name}, not H.264"
            pix_fmt = context.pix_fmt or ""
            if pix_fmt not in COPYABLE_PIXEL_FORMATS:
                return f"the pixel format is {pix_fmt or 'unknown'}, not 8-bit 4:2:0"
    except av.FFmpegError as error:
        return f"the file cannot be demuxed ({error})"
    return None


def packet_index(path: str | os.PathLike) -> PacketIndex:
    """Read every packet header of the first video stream (no decoding). Raises :class:`CannotCopy` when a packet
    has no presentation time or the stream is empty."""
    packets: list[_Packet] = []
    end_pts = None
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            time_base = Fraction(stream.time_base)
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                if packet.pts is None:
                    raise CannotCopy("a packet has no presentation time")
                presented = not packet.is_discard
                packets.append(_Packet(pts=packet.pts, dts=packet.dts, keyframe=packet.is_keyframe,
                                       presented=presented))
                if presented:
                    end = packet.pts + (packet.duration or 0)
                    end_pts = end if end_pts is None else max(end_pts, end)
    except av.FFmpegError as error:
        raise CannotCopy(f"the file cannot be demuxed ({error})") from error
    pts_sorted = sorted(p.pts for p in packets if p.presented)
    if not pts_sorted:
        raise CannotCopy("the video has no packets")
    if len(set(pts_sorted)) != len(pts_sorted):
        raise CannotCopy("two packets share a presentation time")
    if end_pts <= pts_sorted[-1]:  # no packet durations: assume the last frame lasts as long as the one before
        end_pts = pts_sorted[-1] + (pts_sorted[-1] - pts_sorted[-2] if len(pts_sorted) > 1 else 1)
    return PacketIndex(packets=packets, pts_sorted=pts_sorted, end_pts=end_pts, time_base=time_base)


@dataclass(frozen=True)
class _Plan:
    first: int  # decoding-order index of the first packet copied (a keyframe)
    last: int  # ... of the last one
    start_pts: int  # frame a's presentation time: time 0 of the clip
    end_pts: int  # frame b's (or the video's end)


def plan_clips(index: PacketIndex, spans: Sequence[tuple[int, int]]) -> dict[int, _Plan]:
    """What to copy for each span ``[start, end)`` (by its position in `spans`). Raises ``ValueError`` for a span
    outside the video and :class:`CannotCopy` for one that cannot be copied (no keyframe before it)."""
    return {position: _plan(index, start, end) for position, (start, end) in enumerate(spans)}


def _plan(index: PacketIndex, start: int, end: int) -> _Plan:
    if not 0 <= start < end <= index.frame_count:
        raise ValueError(f"frames [{start}, {end}) are not within the video's {index.frame_count} frames")
    start_pts = index.pts_sorted[start]
    end_pts = index.pts_sorted[end] if end < index.frame_count else index.end_pts
    pts, presented, keyframes = index.columns
    inside = np.flatnonzero(presented & (pts >= start_pts) & (pts < end_pts))
    first_inside, last = int(inside[0]), int(inside[-1])
    usable = keyframes[(keyframes <= first_inside) & (pts[keyframes] <= start_pts)]
    if not usable.size:
        raise CannotCopy(f"no keyframe at or before frame {start}")
    return _Plan(first=int(usable[-1]), last=last, start_pts=start_pts, end_pts=end_pts)


def copy_clips(path: str | os.PathLike, spans: Sequence[tuple[int, int]], folder: Path, *,
               index: PacketIndex | None = None, plans: dict[int, _Plan] | None = None) -> Iterator[tuple[int, Path]]:
    """Write each span ``[start, end)`` (frame numbers, end exclusive) of the video at ``path`` to
    ``folder/<position>.mp4`` by copying packets (see the module docstring), in ONE demux pass over the file; yields
    ``(position, file)`` as each clip is complete. A file is written under a temporary name and renamed when whole;
    closing the generator early removes the partial ones. Raises :class:`CannotCopy` when a span cannot be copied
    (``index`` and ``plans``, when given, are :func:`packet_index` and :func:`plan_clips` of this file and spans)."""
    if not spans:
        return
    index = index or packet_index(path)
    plans = plans or plan_clips(index, spans)
    waiting = sorted(plans, key=lambda position: plans[position].first, reverse=True)  # next to start: last
    open_outputs: dict[int, tuple[av.container.OutputContainer, av.stream.Stream, Path]] = {}
    done: set[int] = set()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(os.fspath(path)) as source:
            stream = source.streams.video[0]
            at = -1  # decoding-order index of the packet in hand (counted as packet_index counts)
            for packet in source.demux(stream):
                if packet.size == 0:
                    continue
                at += 1
                while waiting and plans[waiting[-1]].first == at:  # clips whose first packet this is
                    position = waiting.pop()
                    open_outputs[position] = _open_output(folder, position, stream)
                for position in list(open_outputs):  # the clips being written (for a split: one, or two
                    plan = plans[position]           # while the next one's preroll overlaps the last one's end)
                    output, out_stream, _ = open_outputs[position]
                    packet_copy = av.Packet(bytes(packet))
                    packet_copy.pts = packet.pts - plan.start_pts
                    packet_copy.dts = None if packet.dts is None else packet.dts - plan.start_pts
                    packet_copy.duration = packet.duration
                    packet_copy.time_base = packet.time_base
                    if packet.is_keyframe:
                        packet_copy.is_keyframe = True
                    packet_copy.stream = out_stream
                    output.mux(packet_copy)
                    if at == plan.last:
                        output.close()
                        temp = open_outputs.pop(position)[2]
                        try:
                            set_presented_duration(temp, plan.end_pts - plan.start_pts, index.time_base)
                        except BaseException:
                            temp.unlink(missing_ok=True)
                            raise
                        final = folder / f"{position}.mp4"
                        os.replace(temp, final)
                        done.add(position)
                        yield position, final
                if len(done) == len(plans):
                    break
    except av.FFmpegError as error:
        raise CannotCopy(f"the packets cannot be copied ({error})") from error
    finally:
        for output, _, temp in open_outputs.values():
            try:
                output.close()
            except av.FFmpegError:
                pass
            temp.unlink(missing_ok=True)
    missing = sorted(set(plans) - done)
    if missing:
        raise CannotCopy(f"the video ended before clip {missing[0]} was complete")


def _open_output(folder: Path, position: int, stream) -> tuple:
    temp = folder / f".{position}.part.mp4"
    output = av.open(str(temp), "w", format="mp4", options={"movflags": "+faststart"})
    out_stream = output.add_stream_from_template(stream)
    out_stream.time_base = stream.time_base
    return output, out_stream, temp


# ------------------------------------------------------------------------------------------ MP4 edit list


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, offset, header size, size) of each box in data[start:end]."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise ValueError(f"a malformed {kind!r} box at byte {at}")
        yield kind, at, header, size
        at += size


def _find(data, start: int, end: int, path: Sequence[bytes]) -> Iterator[tuple[int, int]]:
    for kind, at, header, size in _boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                yield at + header, at + size
            else:
                yield from _find(data, at + header, at + size, path[1:])


def _set_duration_field(data: bytearray, body: int, v0_offset: int, v1_offset: int, value: int) -> None:
    """A full box's duration: 32 bits at ``v0_offset`` in version 0, 64 bits at ``v1_offset`` in version 1."""
    if data[body] == 0:
        struct.pack_into(">I", data, body + v0_offset, min(value, 0xFFFFFFFF))
    else:
        struct.pack_into(">Q", data, body + v1_offset, value)


def _read_moov(handle) -> tuple[int, bytearray]:
    """The offset and bytes of the file's top-level ``moov`` box, found by reading box headers only (a clip's
    media data can be large; the movie header is small)."""
    size_of_file = handle.seek(0, os.SEEK_END)
    at = 0
    while at + 8 <= size_of_file:
        handle.seek(at)
        head = handle.read(16)
        size, kind = struct.unpack_from(">I4s", head)
        if size == 1:
            size = struct.unpack_from(">Q", head, 8)[0]
        elif size == 0:
            size = size_of_file - at
        if size < 8:
            break
        if kind == b"moov":
            handle.seek(at)
            return at, bytearray(handle.read(size))
        at += size
    raise CannotCopy("the written clip has no movie header")


def set_presented_duration(path: Path, duration: int, time_base: Fraction) -> None:
    """Make the MP4 at ``path`` present ``duration`` (in ``time_base`` units) from its edit list's start: the
    edit's, the track's and the movie's durations, in the movie's time scale. Rounded down: the frame that starts
    at ``duration`` is left out, the one before it is kept (it starts at least one movie tick earlier). Only the
    ``moov`` box is read and rewritten, in place (no field changes size)."""
    with open(path, "r+b") as handle:
        offset, moov = _read_moov(handle)
        mvhd = next(_find(moov, 0, len(moov), [b"moov", b"mvhd"]), None)
        if mvhd is None:
            raise CannotCopy("the written clip has no movie header")
        body = mvhd[0]
        timescale = struct.unpack_from(">I", moov, body + (12 if moov[body] == 0 else 20))[0]
        movie = int(Fraction(duration) * time_base * timescale)  # floor
        elsts = list(_find(moov, 0, len(moov), [b"moov", b"trak", b"edts", b"elst"]))
        if len(elsts) != 1:
            raise CannotCopy(f"the written clip has {len(elsts)} edit lists, not 1")
        elst = elsts[0][0]
        version, count = moov[elst], struct.unpack_from(">I", moov, elst + 4)[0]
        media_time = struct.unpack_from(">i" if version == 0 else ">q", moov, elst + (12 if version == 0 else 16))[0]
        # One edit that presents media from frame a (at time 0): an empty edit (a delayed start) is not expected.
        if count != 1 or media_time < 0:
            raise CannotCopy(f"the written clip's edit list is not one presented edit ({count} entries, "
                             f"media time {media_time})")
        _set_duration_field(moov, elst, 8, 8, movie)  # the entry's segment duration
        _set_duration_field(moov, body, 16, 24, movie)  # mvhd
        for tkhd, _ in _find(moov, 0, len(moov), [b"moov", b"trak", b"tkhd"]):
            _set_duration_field(moov, tkhd, 20, 28, movie)
        handle.seek(offset)
        handle.write(moov)
