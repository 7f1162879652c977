"""Decode MAVLink 2 frames with pymavlink (an implementation independent of ours) and print them as JSON.

Input on stdin: one frame per line, as hex. Output on stdout: one JSON object per input line, with the decoded
fields (``mavpackettype`` names the message) plus ``_msgid``, ``_src_system``, ``_src_component``,
``_crc_ok`` and ``_frames`` (how many messages the line held: exactly one is expected). A frame pymavlink
rejects (bad CRC, unknown id, wrong length) gives ``{"_error": "..."}``. NaN floats are written as the
string "NaN" (JSON has no NaN). Used by tests/fc_link.rs; run it in the project's Python environment.
"""

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


def decode(frame: bytes) -> dict:
    parser = mavlink.MAVLink(None)
    try:
        messages = parser.parse_buffer(frame) or []
    except mavlink.MAVError as error:
        return {"_error": str(error)}
    if not messages:
        return {"_error": "no complete message"}
    msg = messages[0]
    if msg.get_type() == "BAD_DATA":
        return {"_error": "bad data: " + str(msg.reason)}
    out = {k: clean(v) for k, v in msg.to_dict().items()}
    out["_msgid"] = msg.get_msgId()
    out["_src_system"] = msg.get_srcSystem()
    out["_src_component"] = msg.get_srcComponent()
    out["_crc_ok"] = msg.get_crc() == int.from_bytes(frame[len(frame) - 2 :], "little")
    out["_frames"] = len(messages)
    return out


def main() -> None:
    for line in sys.stdin:
        line = line.strip()
        if line:
            print(json.dumps(decode(bytes.fromhex(line))), flush=True)


if __name__ == "__main__":
    main()
