"""Validation errors of the settings and the policy file in words for zh-CN users, then English.

Pydantic describes a bad value in English only ("Input should be 'enforce' or 'monitor'"). The
people who edit these files read Chinese first: each kind of error gets a short Chinese
description in front of pydantic's English, which keeps the exact detail (the allowed values,
the limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_ZH = {
    "missing": "缺少必填项",
    "extra_forbidden": "未知的键（拼写错误？）",
    "literal_error": "取值不在允许范围内",
    "enum": "取值不在允许范围内",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "int_from_float": "应为整数",
    "float_parsing": "应为数字",
    "float_type": "应为数字",
    "decimal_parsing": "应为金额数字",
    "decimal_type": "应为金额数字",
    "bool_parsing": "应为 true 或 false",
    "bool_type": "应为 true 或 false",
    "string_type": "应为文本",
    "list_type": "应为列表",
    "dict_type": "应为表（[节]）",
    "model_type": "应为表（[节]）",
    "greater_than": "数值过小",
    "greater_than_equal": "数值过小",
    "less_than": "数值过大",
    "less_than_equal": "数值过大",
    "too_short": "内容过少",
    "too_long": "内容过多",
    "string_too_short": "文本过短",
    "string_too_long": "文本过长",
    "string_pattern_mismatch": "格式不符",
    "datetime_parsing": "日期时间格式无效",
    "datetime_from_date_parsing": "日期时间格式无效",
    "datetime_type": "日期时间格式无效",
    "date_parsing": "日期格式无效",
    "date_from_datetime_parsing": "日期格式无效",
    "time_parsing": "时间格式无效",
    "timedelta_parsing": "时长格式无效",
    "value_error": "取值无效",
}


def describe(error: Mapping[str, Any]) -> str:
    """Return ``loc: 中文 — English`` for one pydantic error."""
    loc = ".".join(str(p) for p in error["loc"])
    kind = str(error.get("type", ""))
    english = "unknown key (a typo?)" if kind == "extra_forbidden" else str(error["msg"])
    english = english.removeprefix("Value error, ")
    zh = _ZH.get(kind, "取值无效")
    message = f"{zh} — {english}"
    return f"{loc}: {message}" if loc else message
