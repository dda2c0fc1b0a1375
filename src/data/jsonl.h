// The JSON-lines loop of the data loaders (traces, prompts): one JSON value per line, blank
// lines skipped, and a line that does not parse reported with its FILE:LINE.
#pragma once

#include <functional>        // defines: std::function
#include <initializer_list>  // defines: std::initializer_list
#include <istream>           // defines: std::istream
#include <string>            // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

// Calls `row(value, "PATH:LINE")` for every non-blank line of `in` (opened from `path`);
// throws retort::Error naming PATH:LINE and quoting the line when one is not valid JSON.
void for_each_jsonl_row(std::istream& in, const std::string& path,
                        const std::function<void(const nlohmann::json& value, const std::string& where)>& row);

// The first of `keys` whose value in the object `j` is a string (a dataset's alternative
// field names, e.g. "prompt" / "problem" / "question"); nullptr when none is.
const nlohmann::json* find_string_field(const nlohmann::json& j, std::initializer_list<const char*> keys);

}  // namespace retort
