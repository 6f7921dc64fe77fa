// Package docs holds the project's design page and guides; its test keeps
// the README's package table and every package's doc comment in step with
// the tree. It has no code of its own.
package docs
