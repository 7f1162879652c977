"""Decode MAVLink 2 frames with pymavlink (an implementation independent of ours) and print them as JSON.

Input on stdin: one frame per line, as hex. Output on stdout: one JSON object per input line, with the decoded
fields (``mavpackettype`` names the message) plus ``_msgid``, ``_src_system``, ``_src_component``,
``_crc_ok`` and ``_frames`` (how many messages the line held: exactly one is expected). A frame pymavlink
rejects (bad CRC, unknown id, wrong length) gives ``{"_error": "..."}``. NaN floats are written as the
string "NaN" (JSON has no NaN). Used by tests/fc_link.rs; run it in the project's Python environment.

With ``--key-hex HEX`` (a 32-byte MAVLink 2 signing key as 64 hex digits), pymavlink verifies signatures the
way an autopilot does: every object then also has ``_signed`` (whether the frame carried a signature) and
``_signature_ok`` (whether pymavlink accepted it); a signed frame that fails verification gives
``{"_error": "Invalid signature", "_signature_ok": false}``. The signing state (per-stream timestamps) is shared
across lines, so a timestamp that does not increase on a stream is rejected too. Unsigned frames are refused
in that mode, as by an autopilot with signing set up.
"""

import argparse
import json
import math
import os
import sys

os.environ["MAVLINK20"] = "1"
from pymavlink.dialects.v20 import ardupilotmega as mavlink


def clean(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def decode(frame: bytes, signing=None) -> dict:
    parser = mavlink.MAVLink(None)
    if signing is not None:
        parser.signing = signing
        good_before = signing.goodsig_count
    try:
        messages = parser.parse_buffer(frame) or []
    except mavlink.MAVError as error:
        out = {"_error": str(error)}
        if signing is not None:
            out["_signature_ok"] = False
        return out
    if not messages:
        return {"_error": "no complete message"}
    msg = messages[0]
    if msg.get_type() == "BAD_DATA":
        return {"_error": "bad data: " + str(msg.reason)}
    out = {k: clean(v) for k, v in msg.to_dict().items()}
    out["_msgid"] = msg.get_msgId()
    out["_src_system"] = msg.get_srcSystem()
    out["_src_component"] = msg.get_srcComponent()
    # A signed frame ends with 13 signature bytes after the CRC.
    end = len(frame) - (13 if len(frame) > 2 and frame[0] == 0xFD and frame[2] & 0x01 else 0)
    out["_crc_ok"] = msg.get_crc() == int.from_bytes(frame[end - 2 : end], "little")
    out["_frames"] = len(messages)
    if signing is not None:
        out["_signed"] = bool(getattr(msg, "_signed", False))
        out["_signature_ok"] = signing.goodsig_count > good_before
    return out


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--key-hex", help="verify MAVLink 2 signatures with this 32-byte key (64 hex digits)")
    options = args.parse_args()
    signing = None
    if options.key_hex is not None:
        signing = mavlink.MAVLinkSigning()
        signing.secret_key = bytes.fromhex(options.key_hex)
        if len(signing.secret_key) != 32:
            args.error("--key-hex must be 64 hex digits")
    for line in sys.stdin:
        line = line.strip()
        if line:
            print(json.dumps(decode(bytes.fromhex(line), signing)), flush=True)


if __name__ == "__main__":
    main()
