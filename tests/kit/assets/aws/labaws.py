#!/usr/bin/env python3
"""The AWS side of kolach's aws-vpc tests, around the emulator moto.

Run with the venv's python (boto3 comes with moto). Subcommands:

  proxy   forwards the hosts' EC2 calls to moto, counts each Action= per
          client address (GET /__kolach/counts), and reports a route whose
          network interface or instance is gone as "blackhole", as EC2 does
          (moto always says "active").
  imds    an instance-metadata stub for every host at once: IMDSv2 token,
          instance-id, placement, the role's credentials; the instance is the
          one whose private IP is the CLIENT's source address.
  seed    a VPC holding the lab's underlay, a subnet, two route tables, one
          instance per host (private IP = the host's address) and spares;
          prints the IDs as JSON and writes the map the stub reads.
  ec2     one call straight to moto for the test (JSON in, JSON out).
  auth    switches moto's authentication on after N more calls (moto's
          INITIAL_NO_AUTH_ACTION_COUNT, set at run time): then only keys
          moto's IAM knows, signed right, pass.

Nothing here talks to anything but the moto given on the command line.
"""

import argparse
import datetime
import http.server
import json
import re
import socketserver
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

REGION = "us-east-1"
ZONE = "us-east-1a"
ROLE = "kolach-lab"
# moto accepts any key until authentication is switched on.
KEY_ID = "AKIAKOLACHLAB0000000"
SECRET = "kolach-lab-secret"
EC2_VERSION = "2016-11-15"
# Signed-looking header so moto routes an unsigned call to EC2.
FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=%s/20260101/%s/ec2/aws4_request, "
    "SignedHeaders=host, Signature=0" % (KEY_ID, REGION)
)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(listen, handler):
    host, port = listen.rsplit(":", 1)
    srv = Server((host, int(port)), handler)
    print("listening on %s" % listen, flush=True)
    srv.serve_forever()


# ---------------------------------------------------------------- proxy


HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
ROUTE_ITEM = re.compile(r"<item>(?:(?!<item>).)*?</item>", re.S)


def proxy(args):
    upstream = args.upstream.rstrip("/")
    counts = {}
    lock = threading.Lock()

    def existing_targets():
        """Network interfaces and running instances moto knows."""
        ids = set()
        for action, tag in (
            ("DescribeNetworkInterfaces", "networkInterfaceId"),
            ("DescribeInstances", "instanceId"),
        ):
            body = urllib.parse.urlencode({"Action": action, "Version": EC2_VERSION}).encode()
            req = urllib.request.Request(
                upstream + "/",
                data=body,
                headers={
                    "Authorization": FAKE_AUTH,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            text = urllib.request.urlopen(req, timeout=10).read().decode()
            if action == "DescribeInstances":
                # Only instances not terminated count.
                for m in re.finditer(
                    r"<instanceId>([^<]+)</instanceId>.*?<instanceState>.*?<name>([^<]+)</name>",
                    text,
                    re.S,
                ):
                    if m.group(2) != "terminated":
                        ids.add(m.group(1))
            else:
                ids.update(re.findall(r"<%s>([^<]+)</%s>" % (tag, tag), text))
        return ids

    def blackholes(text):
        try:
            alive = existing_targets()
        except Exception as e:  # noqa: BLE001 - a failed lookup leaves the answer as moto gave it
            print("blackhole lookup failed: %s" % e, flush=True)
            return text

        def fix(m):
            item = m.group(0)
            if "<state>active</state>" not in item:
                return item
            targets = re.findall(r"<(?:networkInterfaceId|instanceId)>([^<]+)</", item)
            if targets and not any(t in alive for t in targets):
                return item.replace("<state>active</state>", "<state>blackhole</state>")
            return item

        return ROUTE_ITEM.sub(fix, text)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stdout.write("%s %s\n" % (self.client_address[0], fmt % a))
            sys.stdout.flush()

        def reply(self, status, body, headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/__kolach/counts":
                with lock:
                    body = json.dumps(counts).encode()
                return self.reply(200, body, [("Content-Type", "application/json")])
            self.forward()

        def do_POST(self):
            self.forward()

        def forward(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            query = urllib.parse.urlsplit(self.path).query
            form = urllib.parse.parse_qs(query)
            if "form-urlencoded" in (self.headers.get("Content-Type") or ""):
                form.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
            action = (form.get("Action") or ["?"])[0]
            client = self.client_address[0]
            with lock:
                per = counts.setdefault(client, {})
                per[action] = per.get(action, 0) + 1
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            req = urllib.request.Request(
                upstream + self.path,
                data=body if self.command != "GET" else None,
                method=self.command,
                headers=headers,
            )
            try:
                resp = urllib.request.urlopen(req, timeout=30)
                status, rheaders, data = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                status, rheaders, data = e.code, e.headers, e.read()
            except Exception as e:  # noqa: BLE001 - moto away: a 503 like EC2's
                return self.reply(503, ("upstream: %s" % e).encode())
            if action == "DescribeRouteTables" and status == 200:
                data = blackholes(data.decode()).encode()
            out = [(k, v) for k, v in rheaders.items() if k.lower() not in HOP]
            self.reply(status, data, out)

    serve(args.listen, Handler)


# ---------------------------------------------------------------- imds


def imds(args):
    def instances():
        with open(args.map) as f:
            return json.load(f)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stdout.write("%s %s\n" % (self.client_address[0], fmt % a))
            sys.stdout.flush()

        def reply(self, status, text, ctype="text/plain", extra=()):
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            if self.path != "/latest/api/token":
                return self.reply(404, "not found")
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds") or "21600"
            self.reply(
                200,
                "kolach-lab-token",
                extra=[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
            )

        def do_GET(self):
            token = self.headers.get("X-aws-ec2-metadata-token")
            if token is not None and token != "kolach-lab-token":
                return self.reply(401, "bad token")
            me = instances().get(self.client_address[0])
            if me is None:
                return self.reply(404, "no instance at %s" % self.client_address[0])
            path = self.path.split("?")[0]
            expires = (
                datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6)
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
            md = "/latest/meta-data/"
            answers = {
                md + "instance-id": me["instance_id"],
                md + "local-ipv4": self.client_address[0],
                md + "mac": me.get("mac", ""),
                md + "placement/region": REGION,
                md + "placement/availability-zone": ZONE,
                md + "iam/security-credentials/": ROLE,
                md + "iam/security-credentials": ROLE,
                md + "iam/security-credentials/" + ROLE: json.dumps(
                    {
                        "Code": "Success",
                        "LastUpdated": "2026-01-01T00:00:00Z",
                        "Type": "AWS-HMAC",
                        "AccessKeyId": KEY_ID,
                        "SecretAccessKey": SECRET,
                        "Token": "kolach-lab-session",
                        "Expiration": expires,
                    }
                ),
                "/latest/dynamic/instance-identity/document": json.dumps(
                    {
                        "instanceId": me["instance_id"],
                        "privateIp": self.client_address[0],
                        "region": REGION,
                        "availabilityZone": ZONE,
                        "accountId": "123456789012",
                    }
                ),
            }
            if path not in answers:
                return self.reply(404, "not found")
            ctype = "application/json" if answers[path].startswith("{") else "text/plain"
            self.reply(200, answers[path], ctype)

    serve(args.listen, Handler)


# ---------------------------------------------------------------- seed, ec2


def client(endpoint, key=KEY_ID, secret=SECRET):
    import boto3  # the venv's; imported here so proxy and imds start fast

    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def seed(args):
    ec2 = client(args.endpoint)
    vpc = ec2.create_vpc(CidrBlock=args.vpc_cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=args.subnet_cidr, AvailabilityZone=ZONE)[
        "Subnet"
    ]["SubnetId"]
    tables = [ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"] for _ in range(2)]
    ec2.associate_route_table(RouteTableId=tables[0], SubnetId=subnet)
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    image = images[0]["ImageId"] if images else "ami-12c6146b"
    instances = {}
    for ip in args.hosts + args.spares:
        inst = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            SubnetId=subnet,
            PrivateIpAddress=ip,
        )["Instances"][0]
        eni = inst["NetworkInterfaces"][0]
        instances[ip] = {
            "instance_id": inst["InstanceId"],
            "eni": eni["NetworkInterfaceId"],
            "mac": eni.get("MacAddress", ""),
        }
    with open(args.map, "w") as f:
        json.dump(instances, f)
    json.dump(
        {"vpc": vpc, "subnet": subnet, "tables": tables, "instances": instances},
        sys.stdout,
    )
    print()


def ec2_call(args):
    """`ec2 <Operation> '<json params>'`: a boto3 call, its answer as JSON."""
    ec2 = client(args.endpoint, args.key or KEY_ID, args.secret or SECRET)
    params = json.loads(args.params) if args.params else {}
    op = re.sub(r"(?<!^)(?=[A-Z])", "_", args.operation).lower()
    out = getattr(ec2, op)(**params)
    out.pop("ResponseMetadata", None)
    json.dump(out, sys.stdout, default=str)
    print()


def auth(args):
    req = urllib.request.Request(
        args.endpoint.rstrip("/") + "/moto-api/reset-auth",
        data=str(args.after).encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    print(urllib.request.urlopen(req, timeout=10).read().decode())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("proxy")
    a.add_argument("--listen", required=True)
    a.add_argument("--upstream", required=True)
    a = sub.add_parser("imds")
    a.add_argument("--listen", required=True)
    a.add_argument("--map", required=True)
    a = sub.add_parser("seed")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--map", required=True)
    a.add_argument("--vpc-cidr", default="198.18.0.0/16")
    a.add_argument("--subnet-cidr", default="198.18.0.0/24")
    a.add_argument("--hosts", nargs="*", default=[])
    a.add_argument("--spares", nargs="*", default=[])
    a = sub.add_parser("ec2")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--key")
    a.add_argument("--secret")
    a.add_argument("operation")
    a.add_argument("params", nargs="?")
    a = sub.add_parser("auth")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--after", type=int, default=0)
    args = p.parse_args()
    {"proxy": proxy, "imds": imds, "seed": seed, "ec2": ec2_call, "auth": auth}[args.cmd](args)


if __name__ == "__main__":
    main()
