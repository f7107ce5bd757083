"""Tool calling and JSON output with the official openai client against `lucid serve` (README: "Tool calling and
structured output"). Start the server first (`make serve`, or `lucid serve --port 8000`), then:

    .venv/bin/python examples/tools_and_json.py [--base-url http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import argparse
import json

from openai import OpenAI

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    client = OpenAI(api_key="0", base_url=parser.parse_args().base_url)
    model = client.models.list().data[0].id

    # 1. The model asks for a tool; the program runs it and sends the result back; the model answers.
    messages = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], temperature=0)
    call = first.choices[0].message.tool_calls[0]
    print(first.choices[0].finish_reason, call.function.name, call.function.arguments)
    result = json.dumps({"temperature_c": 18, "sky": "sunny"})   # what running get_weather gave
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], temperature=0)
    print(final.choices[0].message.content)

    # 2. JSON that always parses and validates against a schema.
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                               "languages": {"type": "array", "items": {"type": "string"}}},
              "required": ["name", "age", "languages"], "additionalProperties": False}
    person = client.chat.completions.create(
        model=model, temperature=0, messages=[{"role": "user", "content": "Invent a programmer."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    print(json.loads(person.choices[0].message.content))


if __name__ == "__main__":
    main()
