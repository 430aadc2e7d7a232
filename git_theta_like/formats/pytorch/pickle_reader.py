"""Read the pickle inside a PyTorch checkpoint without executing it.

`torch.save` writes the object graph (state dicts, optimizer state, metadata) as a pickle whose
tensors point at storages stored as separate zip records. Unpickling normally imports and calls
whatever the pickle names, so a checkpoint can run arbitrary code. This reader never does that:

- `find_class` resolves only a fixed whitelist of globals (tensor rebuild functions, storage
  classes, dtypes, OrderedDict, a few builtins and numpy scalar helpers), and each resolves to an
  inert stand-in defined here that builds a small record (`TensorRef`, `StorageRef`, ...). Torch,
  numpy or builtins functions are never returned. Any other global raises `UnsafePickleError`.
- `persistent_load` turns torch's storage ids into `StorageRef` records.
- Before unpickling, a structural pre-scan walks the opcodes without building anything: it bounds
  the size, the number of opcodes (each builds at most one object, so this bounds memory), the
  memo indices and the nesting of hashable containers (CPython hashes nested tuples
  recursively in C, so a deeply nested dict key would crash the interpreter).
- Nothing the pickle builds is hashed: dicts and sets become lists of their items (`PairDict`,
  `InertValue`), so keys crafted to collide (60k ints equal modulo 2^61 - 1) cost linear time,
  not quadratic. The reader is pickle's Python unpickler with those opcodes replaced.
- A tensor rebuilt from the very same argument objects as one before it (a memoized storage,
  offset, size and stride: the cheapest way to reference one storage millions of times) is that
  same `TensorRef`, so a reference costs a pointer, not a record; at most MAX_TENSORS distinct
  tensors are built.

`read_torch_pickle` returns every storage, every tensor reference and the key path of each tensor.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from git_theta_like import dtypes
from git_theta_like.errors import FormatError, UnsafePickleError

# data.pkl is read whole, and clean holds it about five times over (peeked while its end is
# found, read, checked, unpickled, kept for the skeleton): 32 MiB keeps that within the 300 MB
# that clean may take besides the tensors. A state dict's pickle is ~100 bytes a tensor (100 KB
# for a 70B model); a larger one is stored whole, losslessly, without per-tensor objects.
MAX_PICKLE_BYTES = 32 * 1024 * 1024
# Each opcode builds at most one object (~100 bytes at most besides the bytes of its own
# argument): this bounds the unpickler's memory. torch writes ~40 opcodes per tensor.
MAX_PICKLE_OPS = 1 << 22
MAX_TENSORS = 1 << 20
MAX_NESTING = 1000  # hashable-container nesting in the pickle, and key-path depth
MAX_DIMS = 1024

# torch dtype attribute names -> canonical names (git_theta_like.dtypes). Other torch dtypes
# (complex32, quantized and sub-byte types, ...) are accepted as values and read as opaque bytes.
TORCH_DTYPES: dict[str, str] = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
    "complex64": "C64",
    "cfloat": "C64",
    "complex128": "C128",
    "cdouble": "C128",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}
OPAQUE_TORCH_DTYPES = frozenset(
    {
        "complex32",
        "chalf",
        "qint8",
        "quint8",
        "qint32",
        "quint4x2",
        "quint2x4",
        "bits1x8",
        "bits2x4",
        "bits4x2",
        "bits8",
        "bits16",
        "float4_e2m1fn_x2",
    }
    | {f"int{i}" for i in range(1, 8)}
    | {f"uint{i}" for i in range(1, 8)}
)

# Typed storage classes (torch.FloatStorage, ...) -> element dtype; their pickled numel counts
# elements. torch.UntypedStorage counts bytes and takes its dtype from the tensors that use it.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "ComplexFloatStorage": "C64",
    "ComplexDoubleStorage": "C128",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}


# ---------------------------------------------------------------------------------------------
# Records built from the pickle


@dataclass(frozen=True)
class StorageRef:
    """One storage (a zip record `<archive>/data/<key>`), as the pickle describes it."""

    key: str
    storage_type: str  # e.g. "torch.FloatStorage", "torch.storage.UntypedStorage"
    dtype: str | None  # element dtype of a typed storage; None for an untyped (byte) storage
    numel: int  # elements for a typed storage, bytes for an untyped one
    location: str  # e.g. "cpu", "cuda:0"

    def __setstate__(self, state: object) -> None:
        raise FormatError("pickle sets state on a storage")

    @property
    def nbytes(self) -> int:
        if self.dtype is None:
            return self.numel
        return self.numel * dtypes.ITEMSIZE[self.dtype]


@dataclass(frozen=True, eq=False, slots=True)
class TensorRef:
    """A tensor: a view (offset, shape, stride, all in elements) of a storage."""

    storage: StorageRef
    dtype: str  # canonical dtype, or dtypes.OPAQUE when torch's dtype has no canonical name
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __setstate__(self, state: object) -> None:
        raise FormatError("pickle sets state on a tensor")

    @property
    def numel(self) -> int:
        return dtypes.numel(self.shape)

    def is_contiguous(self) -> bool:
        """Row-major contiguous, as torch defines it (size-1 dims may have any stride)."""
        if self.numel == 0:
            return True
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if size != 1:
                if stride != expected:
                    return False
                expected *= size
        return True


@dataclass(frozen=True)
class PickleContents:
    storages: dict[str, StorageRef]  # by key, in order of first reference in the pickle
    tensors: list[TensorRef]  # every tensor the pickle builds, in pickle order
    named: list[tuple[str, TensorRef]]  # reachable tensors with their dotted key path, each once
    root: object = field(repr=False)


class _Inert:
    """Base of the inert stand-ins: refuses pickle BUILD state unless a subclass accepts it."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise FormatError(f"pickle sets state on {type(self).__name__}, which takes none")


class Token(_Inert):
    """A resolved global that is a value, not a callable (a dtype, a storage or tensor class)."""

    __slots__ = ("kind", "qualname", "value")

    def __init__(self, kind: str, qualname: str, value: str | None = None) -> None:
        self.kind = kind
        self.qualname = qualname
        self.value = value

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


class Stub(_Inert):
    """A resolved global that the pickle may call: an inert function defined in this module."""

    __slots__ = ("fn", "qualname")

    def __init__(self, qualname: str, fn: Callable[..., object]) -> None:
        self.qualname = qualname
        self.fn = fn

    def __call__(self, *args: object) -> object:
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


class PairDict:
    """A pickled dict (or collections.OrderedDict): its (key, value) pairs in pickle order, keys
    never hashed (a duplicated key is kept twice). Keeps any pickled attribute state
    (`_metadata` of a state dict)."""

    __slots__ = ("pairs", "pickled_state")

    def __init__(self, pairs: list[tuple[object, object]] | None = None) -> None:
        self.pairs: list[tuple[object, object]] = pairs if pairs is not None else []
        self.pickled_state: object = None

    def __setitem__(self, key: object, value: object) -> None:
        self.pairs.append((key, value))

    def items(self) -> list[tuple[object, object]]:
        return self.pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __setstate__(self, state: object) -> None:
        self.pickled_state = state


@dataclass(eq=False)
class InertValue:
    """An opaque non-tensor value (a set, slice, device, numpy scalar/array/dtype, ...)."""

    kind: str
    args: tuple[object, ...]
    state: object = None

    def __setstate__(self, state: object) -> None:
        if self.kind not in ("numpy.dtype", "numpy.ndarray"):
            raise FormatError(f"pickle sets state on a {self.kind} value, which takes none")
        self.state = state


# ---------------------------------------------------------------------------------------------
# Inert implementations of the whitelisted callables


def _count(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise FormatError(f"pickle gives {what} {_short(v)}, expected a non-negative integer")
    return v


def _int_tuple(v: object, what: str, *, signed: bool) -> tuple[int, ...]:
    if not isinstance(v, tuple | list) or len(v) > MAX_DIMS:
        raise FormatError(f"pickle gives tensor {what} {type(v).__name__}, expected a tuple")
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or (x < 0 and not signed):
            raise FormatError(f"pickle gives tensor {what} containing {_short(x)}")
    return v if isinstance(v, tuple) else tuple(v)  # a memoized tuple stays one object


def _dtype_of(token: object) -> str:
    if not (isinstance(token, Token) and token.kind == "dtype" and token.value is not None):
        raise FormatError(f"pickle gives tensor dtype {type(token).__name__}, expected a dtype")
    return token.value


class _Builder:
    """The stand-ins' shared state: every TensorRef built, in order."""

    def __init__(self) -> None:
        self.tensors: list[TensorRef] = []
        # (ids of the argument objects) -> (the tensor, those objects, kept alive so that no id
        # is reused): a repeated reference returns the tensor already built
        self._same: dict[tuple[int, ...], tuple[TensorRef, tuple[object, ...]]] = {}

    def tensor(
        self, storage: object, offset: object, size: object, stride: object, dtype: str | None
    ) -> TensorRef:
        args = (storage, offset, size, stride, dtype)
        key = tuple(map(id, args))
        seen = self._same.get(key)
        if seen is not None:
            return seen[0]
        if len(self.tensors) >= MAX_TENSORS:
            raise FormatError(f"pickle builds more than {MAX_TENSORS} tensors")
        if not isinstance(storage, StorageRef):
            raise FormatError(f"pickle rebuilds a tensor from {type(storage).__name__}, expected a storage")
        shape = _int_tuple(size, "size", signed=False)
        strides = _int_tuple(stride, "stride", signed=True)
        if len(shape) != len(strides):
            raise FormatError(f"pickle gives tensor size {shape} but stride {strides}")
        if dtype is None:
            dtype = storage.dtype if storage.dtype is not None else dtypes.OPAQUE
        ref = TensorRef(storage, dtype, _count(offset, "storage offset"), shape, strides)
        self.tensors.append(ref)
        self._same[key] = (ref, args)
        return ref

    def rebuild_tensor(
        self, storage: object, offset: object, size: object, stride: object, *_rest: object
    ) -> TensorRef:
        return self.tensor(storage, offset, size, stride, None)

    def rebuild_tensor_v3(
        self,
        storage: object,
        offset: object,
        size: object,
        stride: object,
        _requires_grad: object = None,
        _hooks: object = None,
        dtype: object = None,
        *_rest: object,
    ) -> TensorRef:
        return self.tensor(storage, offset, size, stride, _dtype_of(dtype))

    def rebuild_parameter(self, data: object, *_rest: object) -> TensorRef:
        if not isinstance(data, TensorRef):
            raise FormatError(f"pickle builds a parameter from {type(data).__name__}")
        return data

    def rebuild_from_type(
        self, func: object, new_type: object, args: object, _state: object = None
    ) -> object:
        if not (isinstance(func, Stub) and func.qualname in _TENSOR_REBUILDERS):
            raise FormatError(f"pickle rebuilds a tensor subclass with {_short(func)}")
        if not (isinstance(new_type, Token) and new_type.kind == "tensor_type"):
            raise FormatError(f"pickle rebuilds a tensor as {_short(new_type)}")
        if not isinstance(args, tuple):
            raise FormatError("pickle gives tensor rebuild arguments that are not a tuple")
        return func(*args)


_TENSOR_REBUILDERS = frozenset(
    {
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
    }
)


def _ordered_dict(items: object = ()) -> PairDict:
    d = PairDict()
    if isinstance(items, PairDict):
        items = items.pairs
    if not isinstance(items, list | tuple):
        raise FormatError("pickle builds an OrderedDict from something that is not a list")
    for pair in items:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise FormatError("pickle builds an OrderedDict from something that is not pairs")
        d[pair[0]] = pair[1]
    return d


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, "latin1"); nothing else is accepted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FormatError("pickle calls _codecs.encode other than for bytes in latin1")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise FormatError("pickle encodes text that is not latin1 as bytes") from None


def _bytes(*args: object) -> bytes:
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    if len(args) == 2:
        return _latin1_encode(args[0], args[1])
    raise FormatError("pickle calls bytes() with arguments other than a bytes value")


def _bytearray(*args: object) -> InertValue:
    return InertValue("bytearray", (_bytes(*args),))


def _collection(kind: str) -> Callable[..., InertValue]:
    # Sets are kept as inert lists: their items are never hashed (see the module docstring).
    def build(items: object = ()) -> InertValue:
        if not isinstance(items, list | tuple):
            raise FormatError(f"pickle builds a {kind} from {type(items).__name__}")
        return InertValue(kind, tuple(items))

    return build


def _plain(kind: str, max_args: int) -> Callable[..., InertValue]:
    def build(*args: object) -> InertValue:
        if len(args) > max_args:
            raise FormatError(f"pickle builds a {kind} from {len(args)} arguments")
        for a in args:
            if a is not None and not isinstance(a, int | float | str):
                raise FormatError(f"pickle builds a {kind} from {type(a).__name__}")
        return InertValue(kind, args)

    return build


def _size(dims: object = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "torch.Size", signed=True)


def _numpy_scalar(dtype: object, data: object = None) -> InertValue:
    if not isinstance(dtype, InertValue) or dtype.kind != "numpy.dtype":
        raise FormatError("pickle builds a numpy scalar without a numpy dtype")
    if data is not None and not isinstance(data, bytes):
        raise FormatError("pickle builds a numpy scalar from something that is not bytes")
    return InertValue("numpy.scalar", (dtype, data))


def _numpy_reconstruct(subtype: object, shape: object, dtype: object) -> InertValue:
    if not (isinstance(subtype, Token) and subtype.kind == "ndarray_type"):
        raise FormatError("pickle reconstructs a numpy array of a type other than ndarray")
    return InertValue("numpy.ndarray", (shape, dtype))


def _numpy_frombuffer(buffer: object, dtype: object, shape: object, order: object = "C") -> InertValue:
    # numpy arrays pickled with protocol 5: the raw bytes in-band, never interpreted here
    if not isinstance(buffer, bytes | bytearray):
        raise FormatError("pickle rebuilds a numpy array from something that is not bytes")
    return InertValue("numpy.ndarray", (shape, dtype, order), state=bytes(buffer))


def _numpy_dtype(*args: object) -> InertValue:
    if not args or len(args) > 3 or not isinstance(args[0], str):
        raise FormatError("pickle builds a numpy dtype from unexpected arguments")
    return InertValue("numpy.dtype", args)


def _global_table(builder: _Builder) -> dict[tuple[str, str], Stub | Token]:
    table: dict[tuple[str, str], Stub | Token] = {}

    def stub(module: str, name: str, fn: Callable[..., object]) -> None:
        table[module, name] = Stub(f"{module}.{name}", fn)

    def token(module: str, name: str, kind: str, value: str | None = None) -> None:
        table[module, name] = Token(kind, f"{module}.{name}", value)

    stub("torch._utils", "_rebuild_tensor", builder.rebuild_tensor)
    stub("torch._utils", "_rebuild_tensor_v2", builder.rebuild_tensor)
    stub("torch._utils", "_rebuild_tensor_v3", builder.rebuild_tensor_v3)
    stub("torch._utils", "_rebuild_parameter", builder.rebuild_parameter)
    stub("torch._utils", "_rebuild_parameter_with_state", builder.rebuild_parameter)
    stub("torch._tensor", "_rebuild_from_type_v2", builder.rebuild_from_type)
    stub("collections", "OrderedDict", _ordered_dict)
    stub("torch", "Size", _size)
    stub("torch", "device", _plain("torch.device", 2))
    for module in ("builtins", "__builtin__"):
        stub(module, "set", _collection("set"))
        stub(module, "frozenset", _collection("frozenset"))
        stub(module, "slice", _plain("slice", 3))
        stub(module, "complex", _plain("complex", 2))
        stub(module, "bytes", _bytes)
        stub(module, "bytearray", _bytearray)
    stub("_codecs", "encode", _latin1_encode)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        stub(module, "scalar", _numpy_scalar)
        stub(module, "_reconstruct", _numpy_reconstruct)
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        stub(module, "_frombuffer", _numpy_frombuffer)
    stub("numpy", "dtype", _numpy_dtype)
    token("numpy", "ndarray", "ndarray_type")
    for name, canonical in STORAGE_DTYPES.items():
        token("torch", name, "storage", canonical)
        token("torch.cuda", name, "storage", canonical)
    token("torch", "UntypedStorage", "storage")
    token("torch.storage", "UntypedStorage", "storage")
    token("torch.storage", "TypedStorage", "typed_storage")
    for name, canonical in TORCH_DTYPES.items():
        token("torch", name, "dtype", canonical)
    for name in OPAQUE_TORCH_DTYPES:
        token("torch", name, "dtype", dtypes.OPAQUE)
    token("torch", "Tensor", "tensor_type")
    token("torch.nn.parameter", "Parameter", "tensor_type")
    token("torch.nn.parameter", "Buffer", "tensor_type")
    return table


# Opcode handlers of _RestrictedUnpickler (u: the unpickler; pickle._Unpickler's stack is untyped).


def _load_empty_dict(u: Any) -> None:
    u.append(PairDict())


def _load_dict(u: Any) -> None:
    items = u.pop_mark()
    u.append(PairDict([(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]))


def _set_items(target: object, items: list[Any]) -> None:
    if not isinstance(target, PairDict):
        raise FormatError(f"pickle sets items on a {type(target).__name__}")
    target.pairs.extend((items[i], items[i + 1]) for i in range(0, len(items) - 1, 2))


def _load_setitem(u: Any) -> None:
    value = u.stack.pop()
    key = u.stack.pop()
    _set_items(u.stack[-1], [key, value])


def _load_setitems(u: Any) -> None:
    items = u.pop_mark()
    _set_items(u.stack[-1], items)


def _load_empty_set(u: Any) -> None:
    u.append(InertValue("set", (), state=[]))  # ADDITEMS extend the list in `state`


def _load_additems(u: Any) -> None:
    items = u.pop_mark()
    target = u.stack[-1]
    if not (isinstance(target, InertValue) and isinstance(target.state, list)):
        raise FormatError(f"pickle adds set items to a {type(target).__name__}")
    target.state.extend(items)


def _load_frozenset(u: Any) -> None:
    u.append(InertValue("frozenset", tuple(u.pop_mark())))


class _RestrictedUnpickler(pickle._Unpickler):
    """pickle's Python unpickler with dicts and sets built as lists (never hashed)."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.EMPTY_DICT[0]] = _load_empty_dict
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.EMPTY_SET[0]] = _load_empty_set
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.FROZENSET[0]] = _load_frozenset

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.builder = _Builder()
        self.globals = _global_table(self.builder)
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = self.globals.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"pickle references {module}.{name}; it was not executed (only tensor-rebuild "
                "globals are allowed)"
            )
        return found

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise FormatError(f"pickle has a persistent id {_short(pid)}, expected a storage")
        _, stype, key, location, numel = pid
        if not (isinstance(stype, Token) and stype.kind == "storage"):
            raise FormatError(f"pickle has a storage of type {_short(stype)}")
        if not isinstance(key, str) or not isinstance(location, str):
            raise FormatError(f"pickle has a storage with key {_short(key)}")
        ref = StorageRef(key, stype.qualname, stype.value, _count(numel, "storage size"), location)
        known = self.storages.setdefault(key, ref)
        if known != ref:
            raise FormatError(f"pickle describes storage {key!r} twice, differently")
        return known


def _short(v: object) -> str:
    plain = isinstance(v, str | int | float | bytes | Token | Stub | None)
    text = repr(v) if plain else type(v).__name__
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Structural pre-scan


# What the pre-scan does with each opcode
_GENERIC, _PUSH, _STOP, _MARK, _PUT, _MEMOIZE, _GET, _POP, _DUP, _BINPUT, _BINGET = range(11)
_ACTIONS = {
    "STOP": _STOP,
    "MARK": _MARK,
    "PUT": _PUT,
    "BINPUT": _BINPUT,
    "LONG_BINPUT": _PUT,
    "MEMOIZE": _MEMOIZE,
    "GET": _GET,
    "BINGET": _BINGET,
    "LONG_BINGET": _GET,
    "POP": _POP,
    "DUP": _DUP,
}
_HASHABLE_BUILDERS = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"})


@dataclass(frozen=True)
class _OpShape:
    name: str
    action: int
    arg: int | None  # fixed argument size, a pickletools special (< 0), or None for no argument
    two_lines: bool  # GLOBAL / INST: two newline-terminated lines
    pops: int  # items popped below the mark (or plain pops when not uses_mark)
    uses_mark: bool
    pushes: int
    hashable: bool  # builds a tuple or frozenset


def _op_table() -> list[_OpShape | None]:
    table: list[_OpShape | None] = [None] * 256
    for op in pickletools.opcodes:
        before = [s.name for s in op.stack_before]
        uses_mark = "mark" in before
        arg = op.arg
        plain_push = not before and len(op.stack_after) == 1 and op.name not in _ACTIONS
        table[ord(op.code)] = _OpShape(
            name=op.name,
            action=_PUSH if plain_push else _ACTIONS.get(op.name, _GENERIC),
            arg=None if arg is None else arg.n,
            two_lines=arg is not None and arg.name == "stringnl_noescape_pair",
            pops=before.index("mark") if uses_mark else len(before),
            uses_mark=uses_mark,
            pushes=len(op.stack_after),
            hashable=op.name in _HASHABLE_BUILDERS,
        )
    return table


_OPS = _op_table()


def prescan(data: bytes | bytearray) -> None:
    """Check the pickle's structure without building anything; raise FormatError if unsafe.

    Simulates the unpickler's stack (marks kept apart, as CPython does), tracking for each item
    how deeply hashable containers (tuples, frozensets) nest in it, and bounds memo indices by
    the pickle's size (CPython allocates the memo up to the largest index used).
    """
    n = len(data)
    if n > MAX_PICKLE_BYTES:
        raise FormatError(f"pickle is {n} bytes, more than the {MAX_PICKLE_BYTES} allowed")
    pos = 0
    ops = 0
    stack: list[int] = []  # per item: nesting depth of hashable containers
    marks: list[int] = []  # stack lengths at each MARK
    memo: dict[int, int] = {}
    while True:
        if pos >= n:
            raise FormatError("pickle ends without a STOP opcode")
        op = _OPS[data[pos]]
        if op is None:
            raise FormatError(f"pickle has an unknown opcode 0x{data[pos]:02x} at byte {pos}")
        ops += 1
        if ops > MAX_PICKLE_OPS:
            raise FormatError(f"pickle has more than {MAX_PICKLE_OPS} opcodes")
        arg_start = pos + 1
        if op.arg is None:
            pos = arg_start
        elif op.arg >= 0 and arg_start + op.arg <= n:
            pos = arg_start + op.arg
        else:
            pos = _skip_arg(data, arg_start, op)
        action = op.action
        if action == _PUSH:  # a value (int, str, bytes, empty container, global, ...)
            stack.append(0)
            continue
        if action == _BINGET:
            stack.append(memo.get(data[arg_start], 0))
            continue
        if action == _BINPUT and stack and (not marks or len(stack) > marks[-1]):
            memo[data[arg_start]] = stack[-1]
            continue
        fence = marks[-1] if marks else 0
        if action == _GENERIC:
            popped: list[int] = []
            if op.uses_mark:
                if not marks:
                    raise FormatError(f"pickle opcode {op.name} finds no mark")
                fence = marks.pop()
                popped = stack[fence:]
                del stack[fence:]
                fence = marks[-1] if marks else 0
            if op.pops:
                if len(stack) - op.pops < fence:
                    raise FormatError(f"pickle stack underflow at {op.name}")
                popped += stack[-op.pops :]
                del stack[-op.pops :]
            if op.hashable:
                depth = 1 + max(popped, default=0)
                if depth > MAX_NESTING:
                    raise FormatError(f"pickle nests tuples more than {MAX_NESTING} deep")
                stack.append(depth)
            elif op.pushes:
                stack.append(0)
        elif action in (_PUT, _BINPUT, _MEMOIZE):
            if len(stack) <= fence:
                raise FormatError(f"pickle stack underflow at {op.name}")
            idx = len(memo) if action == _MEMOIZE else _memo_index(data, arg_start, pos, op.name)
            if idx > n:
                raise FormatError(f"pickle uses memo index {idx}, beyond its own size")
            memo[idx] = stack[-1]
        elif action == _GET:
            stack.append(memo.get(_memo_index(data, arg_start, pos, op.name), 0))
        elif action == _MARK:
            marks.append(len(stack))
        elif action == _STOP:
            return
        elif len(stack) <= fence:  # POP or DUP with nothing above the mark
            if action == _POP and marks:
                marks.pop()  # CPython lets POP discard a mark
            else:
                raise FormatError(f"pickle stack underflow at {op.name}")
        elif action == _POP:
            stack.pop()
        else:  # DUP
            stack.append(stack[-1])


def _skip_arg(data: bytes | bytearray, pos: int, shape: _OpShape) -> int:
    """The position after the argument of an opcode whose argument starts at pos."""
    n = len(data)
    if shape.arg is None:
        return pos
    if shape.arg >= 0:
        end = pos + shape.arg
    elif shape.arg == pickletools.UP_TO_NEWLINE:
        end = pos
        for _ in range(2 if shape.two_lines else 1):
            nl = data.find(b"\n", end)
            if nl < 0:
                raise FormatError("pickle has an unterminated text argument")
            end = nl + 1
        return end
    else:
        width = _LENGTH_WIDTH[shape.arg]
        if pos + width > n:
            raise FormatError("pickle ends inside an opcode argument")
        signed = shape.arg == pickletools.TAKEN_FROM_ARGUMENT4
        length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
        if length < 0:
            raise FormatError("pickle has a negative length")
        end = pos + width + length
    if end > n:
        raise FormatError("pickle ends inside an opcode argument")
    return end


_LENGTH_WIDTH = {
    pickletools.TAKEN_FROM_ARGUMENT1: 1,
    pickletools.TAKEN_FROM_ARGUMENT4: 4,
    pickletools.TAKEN_FROM_ARGUMENT4U: 4,
    pickletools.TAKEN_FROM_ARGUMENT8U: 8,
}


def _memo_index(data: bytes | bytearray, start: int, end: int, name: str) -> int:
    if name in ("BINPUT", "BINGET"):
        return data[start]
    if name in ("LONG_BINPUT", "LONG_BINGET"):
        return int.from_bytes(data[start:end], "little")
    raw = bytes(data[start:end])
    try:
        return int(raw.strip())
    except ValueError:
        raise FormatError(f"pickle has a bad memo index {raw[:20]!r}") from None


# ---------------------------------------------------------------------------------------------
# Entry point


def read_torch_pickle(data: bytes | bytearray) -> PickleContents:
    """Unpickle a torch `data.pkl` with inert stand-ins; never executes anything it names.

    Raises UnsafePickleError for a global outside the whitelist and FormatError for anything
    else that is not a well-formed torch pickle.
    """
    prescan(data)
    unpickler = _RestrictedUnpickler(data)
    try:
        root = unpickler.load()
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("pickle nests too deeply") from None
    except Exception as e:  # noqa: BLE001 - any failure of a hostile or corrupt pickle
        raise FormatError(f"data.pkl is not a valid pickle: {type(e).__name__}: {e}") from None
    return PickleContents(
        storages=unpickler.storages,
        tensors=unpickler.builder.tensors,
        named=list(walk_tensors(root)),
        root=root,
    )


def walk_tensors(root: object) -> Iterator[tuple[str, TensorRef]]:
    """Each tensor reachable from root through dicts, lists and tuples, once, with its path.

    Depth-first in insertion order, so a tensor's path is the first one the pickle wrote it at.
    Keys join with '.', list and tuple indices are numbers; a tensor at the root is "tensor".
    """
    seen_tensors: set[int] = set()
    seen_containers: set[int] = set()
    if isinstance(root, TensorRef):
        yield "tensor", root
        return
    # One frame per open container: its items as an iterator (a container of millions of
    # references costs nothing more than itself) and its key path.
    frames: list[tuple[Iterator[tuple[object, object]], tuple[str, ...]]] = []

    def enter(obj: object, path: tuple[str, ...]) -> None:
        items: Iterable[tuple[object, object]]
        if isinstance(obj, PairDict):
            items = obj.pairs
        elif isinstance(obj, list | tuple):
            items = enumerate(obj)
        else:
            return
        if id(obj) in seen_containers:
            return
        seen_containers.add(id(obj))
        if len(path) >= MAX_NESTING:
            raise FormatError(f"checkpoint nests containers more than {MAX_NESTING} deep")
        frames.append((iter(items), path))

    enter(root, ())
    while frames:
        items, path = frames[-1]
        for key, value in items:
            if isinstance(value, TensorRef):
                if id(value) not in seen_tensors:
                    seen_tensors.add(id(value))
                    yield ".".join((*path, _segment(key))), value
            elif isinstance(value, PairDict | list | tuple):
                enter(value, (*path, _segment(key)))
                break  # depth first: the new frame is on top
        else:
            frames.pop()


def _segment(key: object) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, int | float):
        return str(key)
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    if isinstance(key, tuple) and all(isinstance(k, str | int | float) for k in key):
        return ",".join(map(str, key))
    return f"<{type(key).__name__}>"
