"""Smoke, last: taking the stack down leaves no container, network or volume behind, the anonymous
volumes its containers mounted (a VOLUME of an image that no mapping covers) included."""

from testkit import check, existing_volumes, mounted_volumes


def test_teardown_leaves_nothing(stack):
    mounted = mounted_volumes(stack.name)
    left = stack.teardown()
    anonymous = existing_volumes(v for v in mounted if v not in left["volumes"])
    left["volumes mounted by its containers"] = [f"{v[:12]} ({mounted[v]})" for v in anonymous]
    check("prod.down all --volumes leaves no container, network or volume (anonymous ones included)",
          not any(left.values()), {k: v for k, v in left.items() if v} or f"none; {len(mounted)} volumes were mounted")
