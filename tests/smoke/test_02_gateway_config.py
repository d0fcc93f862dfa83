"""Smoke: the gateway's rendered nginx config passes `nginx -t` inside the gateway image, and
its body limit follows Dify's upload limits."""

from __future__ import annotations

import subprocess

import pytest
from conftest import LOCAL_IMAGES, ROOT
from smokelib import check

IMAGE = LOCAL_IMAGES["NGINX_IMAGE"]


def render(env: dict[str, str], command: list[str]) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none",
            "-v", f"{ROOT}/nginx/templates:/etc/nginx/templates:ro",
            "-v", f"{ROOT}/nginx/entrypoint.d/15-difyops-defaults.envsh:/docker-entrypoint.d/15-difyops-defaults.envsh:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args + [IMAGE, *command], capture_output=True, text=True, timeout=120)


def test_nginx_t_passes_on_the_rendered_config():
    result = render({}, ["nginx", "-t"])
    check("nginx -t passes on the rendered gateway config", result.returncode == 0,
          (result.stderr.strip().splitlines() or ["no output"])[-1])


@pytest.mark.parametrize(
    "env, expected",
    [({}, "111M"),  # largest default: 100 MB video uploads
     ({"UPLOAD_VIDEO_FILE_SIZE_LIMIT": "300"}, "331M"),
     ({"NGINX_CLIENT_MAX_BODY_SIZE": "2g"}, "2g")],
)
def test_body_limit_follows_upload_limits(env, expected):
    result = render(env, ["nginx", "-T"])
    lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip().startswith("client_max_body_size")]
    check(f"client_max_body_size with {env or 'defaults'}", lines == [f"client_max_body_size {expected};"],
          lines or result.stderr[-300:])


def test_sse_settings_in_every_api_location():
    result = render({}, ["nginx", "-T"])
    text = result.stdout
    needed = ["proxy_buffering off;", "add_header X-Accel-Buffering no always;", "proxy_read_timeout 3600s;"]
    check("SSE-safe proxy settings are rendered", all(n in text for n in needed),
          [n for n in needed if n not in text] or "all present")
