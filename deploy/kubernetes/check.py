#!/usr/bin/env python3
"""Checks the Kubernetes manifests: each against the Kubernetes API schema (kubernetes-validate,
strict), and against the gateway they run: the ports, probe paths, mounted paths and environment
the Deployment uses are the ones its ConfigMap's tokengate.toml names, the lockout store is the Redis
of redis.yaml with the password its pod requires, the shutdown fits the grace
period, and `tokengate check-config` accepts that configuration with the Secret's client file.

    python3 deploy/kubernetes/check.py [path/to/tokengate]   # default: target/debug/tokengate
"""
import os
import pathlib
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse

import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FILES = [
    "configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml", "redis.yaml",
]


def load(name):
    with open(HERE / name) as f:
        return yaml.safe_load(f)


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def seconds(duration):
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


def main():
    binary = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/tokengate")
    kustomization = load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(FILES), kustomization["resources"]
    for name in FILES:
        for doc in yaml.safe_load_all(open(HERE / name)):
            # Raises on a schema error (strict: unknown fields too).
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)

    config_text = load("configmap.yaml")["data"]["tokengate.toml"]
    config = tomllib.loads(config_text)
    secret = load("secret.yaml")["stringData"]
    deployment = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # Ports: the proxy's and the admin listener's, and the probes on the admin port.
    assert [port_of(a) for a in config["server"]["listen"]] == [ports["http"]], ports
    assert port_of(config["admin"]["listen"]) == ports["admin"], ports
    assert all(a.startswith("0.0.0.0:") for a in config["server"]["listen"] + [config["admin"]["listen"]])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    service = load("service.yaml")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], load("pdb.yaml")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items(), selector

    # Paths: the configuration file the command line names, and the client file.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    config_path = container["args"][container["args"].index("--config") + 1]
    assert mounts["config"]["mountPath"] == config_path and mounts["config"]["subPath"] == "tokengate.toml"
    clients_file = config["clients"]["file"]
    items = {v["name"]: v for v in pod["volumes"]}["clients"]["secret"]["items"]
    assert [mounts["clients"]["mountPath"] + "/" + i["path"] for i in items] == [clients_file]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]

    # The admin token and the Redis password come from the environment the Deployment sets.
    token_env = config["admin"]["bearer_token"].removeprefix("env:")
    redis_env = config["lockout"]["store_password"].removeprefix("env:")
    env = {e["name"]: e for e in container["env"]}
    for name in (token_env, redis_env):
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] in secret, name

    # The lockout store is the Redis Service, with the password the Redis pod requires; the
    # gateway's Service, PodDisruptionBudget and autoscaler do not take in Redis's pods.
    redis_deployment, redis_service, redis_policy = yaml.safe_load_all(open(HERE / "redis.yaml"))
    redis_pod = redis_deployment["spec"]["template"]
    (redis_container,) = redis_pod["spec"]["containers"]
    store = urllib.parse.urlsplit(config["lockout"]["store"])
    assert (store.scheme, store.hostname) == ("redis", redis_service["metadata"]["name"]), store
    assert store.port == redis_service["spec"]["ports"][0]["port"], store
    assert redis_service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    assert not service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    redis_secret = {e["name"]: e for e in redis_container["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert redis_secret == env[redis_env]["valueFrom"]["secretKeyRef"], redis_secret
    args = redis_container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)", args
    assert redis_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert redis_container["securityContext"]["readOnlyRootFilesystem"]

    # Draining, the grace period and the shutdown fit in the pod's grace period.
    s = config["server"]
    stop = seconds(s["drain_delay"]) + seconds(s["grace_period"]) + seconds(s["shutdown_timeout"])
    assert stop < pod["terminationGracePeriodSeconds"], stop
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= seconds(s["drain_delay"])

    # The gateway accepts the configuration, with the Secret's client file.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "clients.toml").write_text(secret["clients.toml"])
        (tmp / "tokengate.toml").write_text(config_text.replace(clients_file, str(tmp / "clients.toml")))
        run_env = dict(os.environ, **{token_env: secret["admin-token"], redis_env: secret["redis-password"]})
        out = subprocess.run(
            [str(binary), "check-config", str(tmp / "tokengate.toml")],
            env=run_env, capture_output=True, text=True,
        )
        assert out.returncode == 0, out.stderr
    print("deploy/kubernetes: ok")


if __name__ == "__main__":
    main()
