"""slm_lsp.context.parsing for Ruby, PHP, C#, Kotlin, Swift, Lua, Bash and Scala.

Each language has a small repository under fixtures/langs/. The tests read the definitions
(name, kind, owner, signature, first doc line) and the imports of its files, and check that the
index resolves each file's import of the other to the right file and that a completion in one
gets the definition it uses from the other. The network is blocked for the whole run
(tests/conftest.py), so each grammar here is one that loads from its wheel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from slm_lsp.context.index import ContextIndex
from slm_lsp.context.parsing import EXTENSIONS, Import, language_of, outline, parse_source, parser_for
from slm_lsp.context.sources.definitions import find_definitions, resolve_import

FIXTURES = Path(__file__).parent / "fixtures" / "langs"
NEW_LANGUAGES = ("ruby", "php", "csharp", "kotlin", "swift", "lua", "bash", "scala")

DEFINITIONS: dict[str, list[tuple[str, str, str]]] = {
    # (kind, owner, name), in file order: every definition and nothing else.
    "ruby/lib/shop/cart.rb": [
        ("class", "", "Shop"), ("class", "Shop", "Cart"), ("method", "Cart", "initialize"), ("method", "Cart", "add"),
        ("method", "Cart", "total"), ("method", "Cart", "each"), ("function", "", "format_cents")],
    "ruby/lib/shop/pricing.rb": [
        ("class", "", "Shop"), ("class", "Shop", "Pricing"), ("method", "Pricing", "with_tax")],
    "php/src/Billing/Contracts/Payable.php": [("class", "", "Payable"), ("method", "Payable", "amountDue")],
    "php/src/Billing/Invoice.php": [
        ("class", "", "Invoice"), ("method", "Invoice", "__construct"), ("method", "Invoice", "addLine"),
        ("method", "Invoice", "amountDue"), ("method", "Invoice", "empty"), ("class", "", "Discountable"),
        ("method", "Discountable", "discount"), ("class", "", "Status"), ("function", "", "cents_to_string")],
    "csharp/Shop/Orders/Order.cs": [
        ("class", "", "Order"), ("method", "Order", "Order"), ("method", "Order", "AddLine"),
        ("method", "Order", "Total"), ("class", "", "IOrder"), ("method", "IOrder", "Total"),
        ("class", "", "OrderLine"), ("class", "", "Receipt"), ("class", "", "OrderState")],
    "csharp/Shop/Pricing/TaxCalculator.cs": [("class", "", "TaxCalculator"), ("method", "TaxCalculator", "WithTax")],
    "kotlin/src/main/kotlin/com/example/shop/Cart.kt": [
        ("class", "", "Cart"), ("method", "Cart", "add"), ("method", "Cart", "total"), ("method", "Cart", "empty"),
        ("class", "", "Item"), ("class", "", "Priced"), ("method", "Priced", "price"), ("class", "", "Registry"),
        ("method", "Registry", "register"), ("class", "", "Currency"), ("type", "", "Carts"),
        ("function", "", "formatCents")],
    "kotlin/src/main/kotlin/com/example/shop/pricing/Pricing.kt": [("function", "", "withTax")],
    "swift/Sources/ShopApp/Cart.swift": [
        ("class", "", "Cart"), ("method", "Cart", "init"), ("method", "Cart", "add"), ("class", "", "Currency"),
        ("method", "Cart", "price"), ("type", "", "Carts"), ("function", "", "formatCents")],
    "swift/Sources/ShopCore/Item.swift": [
        ("class", "", "Item"), ("method", "Item", "init"), ("class", "", "Priced"), ("method", "Priced", "price")],
    "lua/lua/shop/cart.lua": [
        ("method", "Cart", "new"), ("method", "Cart", "add"), ("method", "Cart", "total"),
        ("function", "", "format_cents")],
    "lua/lua/shop/pricing.lua": [("method", "M", "with_tax")],
    "bash/scripts/deploy.sh": [
        ("function", "", "build_release"), ("function", "", "upload_release"), ("function", "", "main")],
    "bash/scripts/lib/log.sh": [("function", "", "log_info"), ("function", "", "die")],
    "scala/src/main/scala/com/example/shop/Cart.scala": [
        ("class", "", "Cart"), ("method", "Cart", "add"), ("method", "Cart", "total"), ("class", "", "Item"),
        ("class", "", "Priced"), ("method", "Priced", "price"), ("class", "", "Cart"), ("method", "Cart", "empty"),
        ("class", "", "Currency"), ("type", "", "Carts"), ("function", "", "formatCents")],
    "scala/src/main/scala/com/example/shop/pricing/Tax.scala": [("class", "", "Tax"), ("method", "Tax", "withTax")],
}

DETAILS: dict[tuple[str, str], tuple[int, str, str]] = {
    # (file, owner.name) → (0-based line, signature, first doc line): the header without its body.
    ("ruby/lib/shop/cart.rb", "Shop.Cart"): (7, "  class Cart < Base", "A shopping cart that holds line items."),
    ("ruby/lib/shop/cart.rb", "Cart.add"): (17, "    def add(item, quantity = 1)", "Adds an item; returns the cart."),
    ("ruby/lib/shop/pricing.rb", "Pricing.with_tax"): (8, "    def self.with_tax(cents)",
                                                       "The price with tax, rounded to a cent."),
    ("ruby/lib/shop/pricing.rb", "Shop"): (2, "module Shop", ""),
    ("php/src/Billing/Invoice.php", "Invoice"): (15, "final class Invoice implements Payable",
                                                 "An invoice for one customer."),
    ("php/src/Billing/Invoice.php", "Invoice.addLine"): (
        27, "    public function addLine(string $label, int $cents): self", "Adds a line in cents."),
    ("php/src/Billing/Invoice.php", "cents_to_string"): (59, "function cents_to_string(int $cents): string",
                                                         "Formats cents as a decimal string."),
    ("csharp/Shop/Orders/Order.cs", "Order"): (8, "    public class Order : IOrder", "An order placed by a customer."),
    ("csharp/Shop/Orders/Order.cs", "Order.AddLine"): (
        20, "        public void AddLine(string sku, int quantity, decimal price)", "Adds a line to the order."),
    ("csharp/Shop/Pricing/TaxCalculator.cs", "TaxCalculator.WithTax"): (
        7, "    public static decimal WithTax(decimal amount)", ""),
    ("kotlin/src/main/kotlin/com/example/shop/Cart.kt", "Cart"): (
        7, "class Cart(private val owner: String) : Base()", "A cart of line items."),
    ("kotlin/src/main/kotlin/com/example/shop/Cart.kt", "Cart.total"): (17, "    fun total(): Long", ""),
    ("kotlin/src/main/kotlin/com/example/shop/Cart.kt", "Carts"): (40, "typealias Carts = List<Cart>", ""),
    ("kotlin/src/main/kotlin/com/example/shop/pricing/Pricing.kt", "withTax"): (
        5, "fun withTax(cents: Long): Long", "The price with tax, in cents."),
    ("swift/Sources/ShopApp/Cart.swift", "Cart.add"): (
        13, "    @discardableResult\n    func add(_ item: Item, quantity: Int = 1) -> Cart",
        "Adds an item and returns the cart."),
    ("swift/Sources/ShopApp/Cart.swift", "Cart.init"): (8, "    init(owner: String)", ""),
    ("swift/Sources/ShopCore/Item.swift", "Item"): (3, "public struct Item: Hashable, Codable", "One thing in a cart."),
    ("lua/lua/shop/cart.lua", "Cart.add"): (12, "function Cart:add(item, quantity)", "Adds an item; returns the cart."),
    ("lua/lua/shop/cart.lua", "format_cents"): (27, "local function format_cents(cents)", ""),
    ("bash/scripts/deploy.sh", "build_release"): (7, "build_release()", "Builds the release archive for a version."),
    ("bash/scripts/lib/log.sh", "die"): (7, "function die", ""),
    ("scala/src/main/scala/com/example/shop/Cart.scala", "Cart.add"): (
        11, "  def add(item: Item, quantity: Int = 1): Cart", "Adds an item; returns the cart."),
    ("scala/src/main/scala/com/example/shop/pricing/Tax.scala", "Tax"): (
        3, "object Tax", "Sales tax on a net amount in cents."),
}

IMPORTS: dict[str, list[Import]] = {
    "ruby/lib/shop/cart.rb": [Import("json", line=2), Import("./pricing", line=3)],
    "php/src/Billing/Invoice.php": [
        Import("App\\Billing\\Contracts\\Payable", [("Payable", "Payable")], line=6),
        Import("App\\Support\\Money", [("Money", "Cash")], line=7),
        Import("App\\Support\\format_money", [("format_money", "format_money")], line=8),
        Import("./helpers.php", line=10)],
    "csharp/Shop/Orders/Order.cs": [
        Import("System", line=0), Import("System.Collections.Generic", line=1), Import("Shop.Pricing", line=2),
        Import("System.Decimal", alias="Money", line=3)],
    "kotlin/src/main/kotlin/com/example/shop/Cart.kt": [
        Import("com.example.shop.pricing", [("withTax", "withTax")], line=2),
        Import("kotlinx.coroutines.flow", [("Flow", "KFlow")], line=3), Import("java.util", [("*", "*")], line=4)],
    "swift/Sources/ShopApp/Cart.swift": [Import("Foundation", line=0), Import("ShopCore", line=1)],
    "lua/lua/shop/cart.lua": [Import("shop.pricing", alias="pricing", line=0), Import("cjson", alias="json", line=1)],
    "bash/scripts/deploy.sh": [Import("lib/log.sh", line=3), Import("./lib/config.sh", line=4)],
    "scala/src/main/scala/com/example/shop/Cart.scala": [
        Import("com.example.shop.pricing", [("Tax", "Tax")], line=2),
        Import("scala.collection.mutable", [("ListBuffer", "ListBuffer"), ("Map", "MMap")], line=3),
        Import("scala.concurrent", [("*", "*")], line=4)],
}

USES: dict[str, tuple[str, int, str, str]] = {
    # language → (file, a line that uses a name defined in the other file, that file, the name).
    "ruby": ("lib/shop/cart.rb", 23, "lib/shop/pricing.rb", "Pricing"),
    "php": ("src/Billing/Invoice.php", 15, "src/Billing/Contracts/Payable.php", "Payable"),
    "csharp": ("Shop/Orders/Order.cs", 30, "Shop/Pricing/TaxCalculator.cs", "TaxCalculator"),
    "kotlin": ("src/main/kotlin/com/example/shop/Cart.kt", 17,
               "src/main/kotlin/com/example/shop/pricing/Pricing.kt", "withTax"),
    "swift": ("Sources/ShopApp/Cart.swift", 16, "Sources/ShopCore/Item.swift", "Item"),
    "lua": ("lua/shop/cart.lua", 22, "lua/shop/pricing.lua", "with_tax"),
    "bash": ("scripts/deploy.sh", 10, "scripts/lib/log.sh", "log_info"),
    "scala": ("src/main/scala/com/example/shop/Cart.scala", 16,
              "src/main/scala/com/example/shop/pricing/Tax.scala", "Tax"),
}


def _parse(rel: str):
    lang = language_of(rel)
    assert lang is not None, rel
    return parse_source((FIXTURES / rel).read_text(encoding="utf-8"), lang)


def test_every_fixture_file_is_listed():
    files = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    assert files == set(DEFINITIONS)
    assert {language_of(p) for p in files} == set(NEW_LANGUAGES)


@pytest.mark.parametrize("lang", NEW_LANGUAGES)
def test_each_grammar_loads_from_its_wheel(lang):
    tree = parser_for(lang).parse(b"x")
    assert tree.root_node is not None


@pytest.mark.parametrize("rel", sorted(DEFINITIONS))
def test_definitions_names_kinds_and_owners(rel):
    assert [(d.kind, d.parent, d.name) for d in _parse(rel).definitions] == DEFINITIONS[rel]


@pytest.mark.parametrize("key", sorted(DETAILS))
def test_definition_signature_and_doc(key):
    rel, qualified = key
    owner, _, name = qualified.rpartition(".")
    d = next(d for d in _parse(rel).definitions if d.name == name and d.parent == owner)
    assert (d.line, d.signature, d.doc) == DETAILS[key]


def test_class_fields_are_the_members_that_are_not_methods():
    fields = {d.name: d.fields for d in _parse("kotlin/src/main/kotlin/com/example/shop/Cart.kt").definitions}
    assert fields["Cart"] == ["    private val items = mutableListOf<Item>()", "    val size: Int get() = items.size"]
    assert fields["Currency"] == []  # enum class Currency { EUR, USD }: one line, the signature has it
    ruby = {d.name: d.fields for d in _parse("ruby/lib/shop/cart.rb").definitions}
    assert ruby["Cart"] == ["    include Enumerable", "    attr_reader :items"]
    php = {d.name: d.fields for d in _parse("php/src/Billing/Invoice.php").definitions}
    assert php["Invoice"] == ["    use Discountable;", "    public const CURRENCY = 'EUR';",
                              "    private array $lines = [];"]


@pytest.mark.parametrize("rel", sorted(IMPORTS))
def test_imports(rel):
    assert _parse(rel).imports == IMPORTS[rel]


@pytest.mark.parametrize("lang", NEW_LANGUAGES)
def test_the_index_resolves_the_import_and_finds_the_used_definition(lang):
    index = ContextIndex(str(FIXTURES / lang))
    snap = index.build()
    rel, line, other, name = USES[lang]
    entry = snap.files[rel]
    assert entry.language == lang and snap.files[other].language == lang
    targets = {p for imp in entry.imports for p in resolve_import(snap, rel, lang, imp)}
    assert targets == {other}
    lines = (FIXTURES / lang / rel).read_text(encoding="utf-8").split("\n")
    found = find_definitions(snap, rel, lang, lines, line, entry.imports, {d.name for d in entry.definitions},
                             time.monotonic() + 10)
    assert (found[0].path, found[0].definition.name) == (other, name)


def test_rendered_context_speaks_each_language():
    snap = ContextIndex(str(FIXTURES / "ruby")).build()
    entry = snap.files["lib/shop/cart.rb"]
    lines = (FIXTURES / "ruby/lib/shop/cart.rb").read_text(encoding="utf-8").split("\n")
    own = {d.name for d in entry.definitions}
    found = find_definitions(snap, "lib/shop/cart.rb", "ruby", lines, 23, entry.imports, own, time.monotonic() + 10)
    assert found[0].text == ("  # Prices in cents, tax included.\n  module Pricing\n    TAX_RATE = 0.2\n"
                             "    def self.with_tax(cents)\n  end\n")
    snap = ContextIndex(str(FIXTURES / "lua")).build()
    entry = snap.files["lua/shop/cart.lua"]
    lines = (FIXTURES / "lua/lua/shop/cart.lua").read_text(encoding="utf-8").split("\n")
    own = {d.name for d in entry.definitions}
    found = find_definitions(snap, "lua/shop/cart.lua", "lua", lines, 22, entry.imports, own, time.monotonic() + 10)
    assert found[0].text == "-- The price with tax, rounded to a cent.\nfunction M.with_tax(cents)\n"


def test_outline_imports_and_scopes():
    ruby = (FIXTURES / "ruby/lib/shop/cart.rb").read_text(encoding="utf-8")
    shape = outline(ruby, "ruby", 23)
    assert shape.imports == ((2, 2), (3, 3))
    assert shape.scopes == ((5, 5), (7, 7), (22, 22))  # module Shop, class Cart, def total
    kotlin = (FIXTURES / "kotlin/src/main/kotlin/com/example/shop/Cart.kt").read_text(encoding="utf-8")
    shape = outline(kotlin, "kotlin", 13)
    assert shape.imports == ((2, 2), (3, 3), (4, 4))
    assert shape.scopes == ((7, 7), (12, 12))  # class Cart, fun add
    lua = (FIXTURES / "lua/lua/shop/cart.lua").read_text(encoding="utf-8")
    assert outline(lua, "lua", 14).imports == ((0, 0), (1, 1))
    bash = (FIXTURES / "bash/scripts/deploy.sh").read_text(encoding="utf-8")
    shape = outline(bash, "bash", 9)
    assert shape.imports == ((3, 3), (4, 4))
    assert shape.scopes == ((7, 7),)


def test_language_of_by_extension_name_and_language_id():
    assert [language_of(p) for p in ("a.rb", "Rakefile", "x.gemspec", "a.php", "A.cs", "b.kt", "b.kts", "c.swift",
                                     "d.lua", "e.sh", "e.bash", "f.scala", "g.sc")] == [
        "ruby", "ruby", "ruby", "php", "csharp", "kotlin", "kotlin", "swift", "lua", "bash", "bash", "scala", "scala"]
    assert language_of("bin/deploy", "shellscript") == "bash" and language_of("bin/deploy", "sh") == "bash"
    assert language_of("untitled-1", "csharp") == "csharp"
    assert language_of("bin/deploy") is None and language_of("notes.txt", "plaintext") is None
    assert language_of("a.py", "ruby") == "python"  # the name wins
    assert language_of("dir.rb/README") is None  # a dot in a folder's name is no extension
    assert set(EXTENSIONS.values()) >= set(NEW_LANGUAGES)


STYLES: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    # Other ways to write a definition: (source, [(kind, owner, name, signature)]).
    "lua": ("local M = {}\n-- Doubles.\nM.twice = function(x)\n  return 2 * x\nend\n"
            "local helper = function(y) return y end\nreturn M\n",
            [("method", "M", "twice", "M.twice = function(x)"),
             ("function", "", "helper", "local helper = function(y)")]),
    "scala": ("object Main:\n  def run(args: Array[String]): Unit =\n    println(args)\n",
              [("class", "", "Main", "object Main"),
               ("method", "Main", "run", "  def run(args: Array[String]): Unit")]),
    "kotlin": ("class P(val x: Int) {\n    constructor() : this(0)\n}\nfun <T> List<T>.second(): T = this[1]\n",
               [("class", "", "P", "class P(val x: Int)"),
                ("method", "P", "constructor", "    constructor() : this(0)"),
                ("function", "", "second", "fun <T> List<T>.second(): T")]),
    "ruby": ("class Foo::Bar\n  class << self\n    def build(x)\n      new\n    end\n  end\nend\n",
             [("class", "", "Bar", "class Foo::Bar"), ("method", "Bar", "build", "    def build(x)")]),
    "swift": ("actor Counter {\n    func inc() {}\n    deinit {}\n}\n"
              "extension String {\n    func shout() -> String { uppercased() }\n}\n",
              [("class", "", "Counter", "actor Counter"), ("method", "Counter", "inc", "    func inc()"),
               ("method", "Counter", "deinit", "    deinit"),
               ("method", "String", "shout", "    func shout() -> String")]),
    "php": ("<?php\nnamespace App {\n    function g() {}\n}\n", [("function", "", "g", "    function g()")]),
    "csharp": ("namespace A.B {\n  namespace C {\n    class X { X() {} }\n  }\n}\n",
               [("class", "", "X", "    class X"), ("method", "X", "X", "    X()")]),
    "bash": ("f() ( echo sub )\n", [("function", "", "f", "f()")]),
}


@pytest.mark.parametrize("lang", sorted(STYLES))
def test_other_ways_to_define(lang):
    source, want = STYLES[lang]
    assert [(d.kind, d.parent, d.name, d.signature) for d in parse_source(source, lang).definitions] == want


@pytest.mark.parametrize("lang", NEW_LANGUAGES)
def test_broken_or_empty_source_parses_without_error(lang):
    for source in ("", "\x00\x01", "class {{{ def (", "}}}} end end", "function"):
        parse_source(source, lang)
        outline(source, lang, 0)
