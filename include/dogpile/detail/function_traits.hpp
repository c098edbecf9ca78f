#pragma once
// Result and argument types of a non-generic callable (function, function pointer, lambda,
// std::function), so decorators can name the value type without the caller spelling it.

#include <functional>
#include <string>
#include <tuple>
#include <type_traits>

namespace dogpile::detail {

template <class F, class = void>
struct function_traits;

template <class R, class... A>
struct function_traits<R(A...)> {
  using result = R;
  using args = std::tuple<A...>;
  static constexpr std::size_t arity = sizeof...(A);
};
template <class R, class... A>
struct function_traits<R (*)(A...)> : function_traits<R(A...)> {};
template <class R, class... A>
struct function_traits<R (&)(A...)> : function_traits<R(A...)> {};
template <class C, class R, class... A>
struct function_traits<R (C::*)(A...)> : function_traits<R(A...)> {};
template <class C, class R, class... A>
struct function_traits<R (C::*)(A...) const> : function_traits<R(A...)> {};
template <class C, class R, class... A>
struct function_traits<R (C::*)(A...) noexcept> : function_traits<R(A...)> {};
template <class C, class R, class... A>
struct function_traits<R (C::*)(A...) const noexcept> : function_traits<R(A...)> {};
template <class R, class... A>
struct function_traits<R (*)(A...) noexcept> : function_traits<R(A...)> {};
template <class F>
struct function_traits<F, std::void_t<decltype(&F::operator())>>
    : function_traits<decltype(&F::operator())> {};

template <class F>
using fn_result_t = std::decay_t<typename function_traits<std::decay_t<F>>::result>;
/// What a region caches for `F`'s result: a C string becomes `std::string`.
template <class F>
using cached_result_t = std::conditional_t<std::is_same_v<fn_result_t<F>, const char*> ||
                                               std::is_same_v<fn_result_t<F>, char*>,
                                           std::string, fn_result_t<F>>;
template <class F, std::size_t I>
using fn_arg_t =
    std::decay_t<std::tuple_element_t<I, typename function_traits<std::decay_t<F>>::args>>;

}  // namespace dogpile::detail
