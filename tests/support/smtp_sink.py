"""A real SMTP server on loopback for the mail tests (aiosmtpd).

Usage: smtp_sink.py PORT OUTFILE REFUSALS
Answers the first REFUSALS messages with a transient 451, then accepts and appends
each message to OUTFILE as one JSON line {"from", "to", "data"}. Prints "ready" once
listening; exits when its standard input closes.
"""
import json
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, refusals):
        self.out = out
        self.refusals = refusals
        self.seen = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.refusals:
            return "451 4.3.0 Try again later"
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def main():
    port, out, refusals = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    controller = Controller(Handler(out, refusals), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
